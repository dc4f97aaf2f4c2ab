"""kinema.tokenizers"""
from kinema.tokenizers.text import TextTokenizer  # noqa: E402,F401
from kinema.tokenizers.audio import AudioCodec, AudioCodecConfig  # noqa: E402,F401
from kinema.tokenizers.video import VideoTokenizer, VideoTokenizerConfig  # noqa: E402,F401
