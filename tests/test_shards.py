"""Token shards: write/read round trip, resume after a kill, on-the-fly layouts, length grouping."""
from __future__ import annotations

import json
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from kinema.lm import layout
from kinema.lm.shards import Record, ShardWriter, TokenShards, extract
from kinema.lm.token_data import (LengthGroupedBatchSampler, TokenShardDataset, collate,
                                  padding_fraction)
from kinema.lm.vocab import Vocab
from conftest import load_script

VOCAB = Vocab(text_size=40, video_codebook_size=2**12, audio_codebook_size=16, audio_num_quantizers=3)


def _record(i: int, with_audio: bool = True) -> Record:
    """A deterministic random sample; lengths vary so grouping has something to group."""
    g = np.random.default_rng(i)
    t = int(g.integers(1, 7))
    arrays = {"video": g.integers(0, 2**12, size=(t, 2, 3))}
    if with_audio:
        arrays["audio"] = g.integers(0, 16, size=(3, 2 * t + 1))
    text = g.integers(0, 40, size=int(g.integers(0, 12))).tolist()
    return Record(i, f"clip{i}", f"caption {i}", text, arrays)


def _encoder_factory(calls: list[int] | None = None):
    def encode(i: int) -> Record | None:
        if calls is not None:
            calls.append(i)
        return None if i == 5 else _record(i)
    return encode


def _same_records(a: Record, b: Record) -> None:
    assert (a.index, a.key, a.caption, a.text) == (b.index, b.key, b.caption, b.text)
    assert set(a.arrays) == set(b.arrays)
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k])


def test_write_read_round_trip(tmp_path: Path) -> None:
    recs = [_record(i) for i in range(20)]
    with ShardWriter(tmp_path, {"video_codebook_size": 4096}, shard_bytes=400) as w:
        for r in recs:
            w.write(r)
    assert len(list(tmp_path.glob("shard_*.bin"))) > 1  # rolled over to several shards
    shards = TokenShards(tmp_path)
    assert len(shards) == 20 and shards.meta["video_codebook_size"] == 4096
    for i, r in enumerate(recs):
        _same_records(shards[i], r)
        assert shards.shapes(i) == {k: tuple(v.shape) for k, v in r.arrays.items()}
    with pytest.raises(ValueError, match="other settings"):
        ShardWriter(tmp_path, {"video_codebook_size": 1024})


def test_resume_after_partial_extraction(tmp_path: Path) -> None:
    calls: list[int] = []
    first = extract(tmp_path, 12, partial(_encoder_factory, calls), limit=7, progress=False)
    assert first == {"done_before": 0, "written": 6, "skipped": 1}
    # simulate a kill in the middle of the next sample: bytes appended, index line torn
    bin_, idx = tmp_path / "shard_00000.bin", tmp_path / "shard_00000.jsonl"
    with open(bin_, "ab") as f:
        f.write(b"\x01" * 37)
    with open(idx, "ab") as f:
        f.write(b'{"index": 7, "key": "cl')
    calls.clear()
    second = extract(tmp_path, 12, partial(_encoder_factory, calls), progress=False)
    assert second["done_before"] == 6 and second["written"] == 5
    assert set(calls) == {5, 7, 8, 9, 10, 11}  # only the unfinished items ran again (5 was unusable)
    shards = TokenShards(tmp_path)
    assert shards.indices == [i for i in range(12) if i != 5]
    for k, i in enumerate(shards.indices):
        _same_records(shards[k], _record(i))
    # a third run has nothing to do
    assert extract(tmp_path, 12, _encoder_factory, progress=False)["written"] == 0


def test_extract_multiprocess_equals_single(tmp_path: Path) -> None:
    extract(tmp_path / "a", 8, _encoder_factory, num_workers=1, progress=False)
    extract(tmp_path / "b", 8, _encoder_factory, num_workers=2, progress=False)
    a, b = TokenShards(tmp_path / "a"), TokenShards(tmp_path / "b")
    assert a.indices == b.indices
    for i in range(len(a)):
        _same_records(a[i], b[i])
    assert (tmp_path / "a" / "shard_00000.bin").read_bytes() == (tmp_path / "b" / "shard_00000.bin").read_bytes()


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    with ShardWriter(tmp_path) as w:
        for i in range(60):
            w.write(_record(i, with_audio=i % 3 != 0))
    return tmp_path


def test_dataset_layouts_are_exact_and_lengths_match(shard_dir: Path) -> None:
    ds = TokenShardDataset(shard_dir, VOCAB, tasks=list(layout.TASKS), drop_text_prob=0.3, max_text_tokens=8)
    seen = set()
    for epoch in range(2):
        ds.set_epoch(epoch)
        lengths = ds.lengths()
        for i in range(len(ds)):
            seq = ds[i]
            seen.add(seq.task)
            assert len(seq) == lengths[i]
            rec = ds.shards[i]
            back = layout.revert(seq.ids, VOCAB, video_hw=(2, 3))
            if "audio" not in rec.arrays:
                assert seq.task not in ("v2a", "a2v", "t2va")
            # every video frame placed in the sequence comes from the stored clip, in order
            vids = [back[k] for k in ("cond_video_codes", "image_codes", "video_codes", "cond_video_after_codes") if k in back]
            order = {"extend_back": ["video_codes", "cond_video_codes"],
                     "i2v": ["image_codes", "video_codes"],
                     "bridge": ["cond_video_codes", "video_codes", "cond_video_after_codes"]}.get(
                seq.task, [k for k in ("cond_video_codes", "video_codes") if k in back])
            clip = torch.cat([back[k] for k in order])
            assert torch.equal(clip, torch.from_numpy(rec.arrays["video"])[: clip.shape[0]])
            assert len(vids) == len(order)
            if "text" in back and back["text"]:
                assert back["text"] == rec.text[:8]
    assert seen == set(layout.TASKS)
    # deterministic in (seed, epoch, index)
    ds.set_epoch(1)
    again = TokenShardDataset(shard_dir, VOCAB, tasks=list(layout.TASKS), drop_text_prob=0.3, max_text_tokens=8)
    again.set_epoch(1)
    assert all(torch.equal(ds[i].ids, again[i].ids) for i in range(10))


def test_text_dropped_about_ten_percent(shard_dir: Path) -> None:
    ds = TokenShardDataset(shard_dir, VOCAB, tasks={"t2v": 1.0}, drop_text_prob=0.1)
    drops = [ds.plan(i).drop_text for e in range(20) for i in range(len(ds)) if not ds.set_epoch(e)]
    assert 0.06 < np.mean(drops) < 0.14


def test_reading_samples_leaves_warnings_alone(shard_dir: Path) -> None:
    """Captions over the text budget are cut without a warning, and reading a sample does not touch
    Python's warning filters: a catch_warnings per sample reset the warning registry, so DeepSpeed's
    once-only deprecation warning printed at every training step."""
    ds = TokenShardDataset(shard_dir, VOCAB, tasks={"t2v": 1.0}, max_text_tokens=2)
    assert max(len(ds.shards[i].text) for i in range(len(ds))) > 2

    def library_call() -> None:
        warnings.warn("deprecated, once", FutureWarning)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # once per call site
        for i in range(len(ds)):
            library_call()
            ds[i]
    assert [str(w.message) for w in caught] == ["deprecated, once"]


def test_collate_and_length_grouping(shard_dir: Path) -> None:
    ds = TokenShardDataset(shard_dir, VOCAB, tasks={"t2v": 1.0, "t2va": 1.0}, max_video_frames=4)
    sampler = LengthGroupedBatchSampler(ds, batch_size=6, seed=0, mega_batch_mult=10)
    batches = sampler.batches()
    assert sorted(i for b in batches for i in b) == list(range(len(ds)))
    lengths = ds.lengths()
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(ds))
    random_batches = [perm[j:j + 6].tolist() for j in range(0, len(ds), 6)]
    assert padding_fraction(batches, lengths) < 0.5 * padding_fraction(random_batches, lengths)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=partial(collate, pad_id=VOCAB.pad))
    batch = next(iter(loader))
    B, L = batch["ids"].shape
    assert batch["positions"].shape == (B, L, 3)
    for b in range(B):
        n = int(batch["lengths"][b])
        assert batch["attention_mask"][b, :n].all() and not batch["attention_mask"][b, n:].any()
        assert (batch["ids"][b, n:] == VOCAB.pad).all() and not batch["loss_mask"][b, n:].any()
        assert not batch["loss_mask"][b, : batch["prefix_len"][b]].any()
    # resuming mid-epoch replays the remaining batches exactly
    sampler.start_batch = 3
    assert list(sampler) == batches[3:]


def test_dataset_bad_input(shard_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown task"):
        TokenShardDataset(shard_dir, VOCAB, tasks=["t2x"])
    with pytest.raises(ValueError, match="fits none"):
        TokenShardDataset(shard_dir, VOCAB, tasks=["v2a"])  # some samples have no audio
    with pytest.raises(ValueError, match="not a token shard"):
        TokenShards(tmp_path / "nothing")
    with ShardWriter(tmp_path / "f") as w:
        with pytest.raises(ValueError, match="integers"):
            w.write(Record(0, arrays={"video": np.zeros((1, 2, 2), dtype=np.float32)}))
    meta = json.loads((shard_dir / "meta.json").read_text())
    assert meta["format"] == "kinema-token-shards"


def test_vocab_from_meta_and_mismatch(tmp_path: Path) -> None:
    from kinema.lm.token_data import vocab_from_meta

    meta = {"text_size": 40, "video_codebook_size": 2**12, "audio_codebook_size": 16, "audio_num_quantizers": 3}
    with ShardWriter(tmp_path, meta) as w:
        w.write(_record(0))
    shards = TokenShards(tmp_path)
    assert vocab_from_meta(shards.meta) == VOCAB
    TokenShardDataset(shards, VOCAB)
    with pytest.raises(ValueError, match="video_codebook_size=4096"):
        TokenShardDataset(shards, Vocab(40, 2**10, 16, 3))
    nested = {"vocab": VOCAB.to_dict()}
    assert vocab_from_meta(nested) == VOCAB
    assert vocab_from_meta(nested, video_factorize=True) == Vocab(40, 2**12, 16, 3, video_factorize=True)
    with ShardWriter(tmp_path / "n", nested) as w:
        w.write(_record(0))
    with pytest.raises(ValueError, match="text_size=40"):
        TokenShardDataset(tmp_path / "n", Vocab(41, 2**12, 16, 3))


def test_max_tokens_crops_frames_and_factorised_lengths(shard_dir: Path) -> None:
    import pickle

    vf = Vocab(40, 2**12, 16, 3, video_factorize=True)
    ds = TokenShardDataset(shard_dir, vf, tasks=list(layout.TASKS), max_tokens=60)
    lengths = ds.lengths()
    for i in range(len(ds)):
        seq = ds[i]
        assert len(seq) == lengths[i]
        p = ds.plan(i)
        if p.frames > {"i2v": 2, "continue": 2, "extend_back": 2, "bridge": 3}.get(p.task, 1):
            assert len(seq) <= 60
    # the shards pickle without their data (DataLoader workers re-open the memory maps)
    ds.shards[0]
    assert len(pickle.dumps(ds.shards)) < 20_000
    back = pickle.loads(pickle.dumps(ds))
    assert torch.equal(back[3].ids, ds[3].ids)


def test_batches_feed_the_lm(shard_dir: Path) -> None:
    """The collated batch is exactly what KinemaLM.forward takes; a tiny LM fits one batch."""
    from kinema.lm.model import KinemaLM, LMConfig

    torch.manual_seed(0)
    ds = TokenShardDataset(shard_dir, VOCAB, tasks=list(layout.TASKS), max_tokens=120)
    sampler = LengthGroupedBatchSampler(ds, batch_size=4, seed=0)
    batch = collate([ds[i] for i in sampler.batches()[0]], pad_id=VOCAB.pad)
    model = KinemaLM(LMConfig.preset("tiny", vocab_size=VOCAB.size, vocab=VOCAB.to_dict()))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(batch["ids"], batch["positions"], prefix_len=batch["prefix_len"],
                    attention_mask=batch["attention_mask"], loss_mask=batch["loss_mask"])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert out.n_tokens == int((batch["loss_mask"][:, 1:] & batch["attention_mask"][:, 1:]).sum())
    assert losses[-1] < 0.6 * losses[0], losses[::10]


def test_change_weights_mark_the_codes_that_moved(tmp_path: Path) -> None:
    """With change_weight, exactly the output video tokens whose code differs from the code one latent
    frame earlier (in the clip, so across the cut of i2v/continue too) carry the weight."""
    from kinema.lm.token_data import change_weights

    g = np.random.default_rng(0)
    video = np.full((5, 2, 3), 7)  # a static background ...
    for t in range(1, 5):  # ... with one moving cell and one random flicker per frame
        video[t, t % 2, t % 3] = 100 + t
        video[t, g.integers(2), g.integers(3)] = 200 + t
    with ShardWriter(tmp_path) as w:
        w.write(Record(0, "clip0", "c", [1, 2], {"video": video, "audio": g.integers(0, 16, size=(3, 11))}))
    v = torch.from_numpy(video)
    changed = torch.zeros(5, 2, 3, dtype=torch.bool)
    changed[1:] = v[1:] != v[:-1]
    for task in layout.TASKS:
        ds = TokenShardDataset(tmp_path, VOCAB, tasks={task: 1.0}, drop_text_prob=0.0, change_weight=3.0)
        plain = TokenShardDataset(tmp_path, VOCAB, tasks={task: 1.0}, drop_text_prob=0.0)
        for epoch in range(4):
            ds.set_epoch(epoch), plain.set_epoch(epoch)
            seq, p = ds[0], ds.plan(0)
            assert plain[0].loss_weight is None and torch.equal(seq.ids, plain[0].ids)
            span = ds._output_frames(p)
            if span is None:
                assert seq.loss_weight is None and task == "v2a"
                continue
            a, b = span
            v0, v1 = VOCAB.video_range
            out_video = seq.loss_mask & (seq.ids >= v0) & (seq.ids < v1)
            expect = 1.0 + 2.0 * changed[a:b].reshape(-1).float()
            assert torch.equal(seq.loss_weight[out_video], expect), (task, span)
            assert bool((seq.loss_weight[~out_video] == 1).all())
            if a >= 1:  # the first output frame is judged against the conditioning frame before it
                assert bool(seq.loss_weight[out_video][:6].gt(1).any())
    batch = collate([ds[0], plain[0]], pad_id=VOCAB.pad)
    assert batch["loss_weight"].shape == batch["ids"].shape and bool((batch["loss_weight"][1] == 1).all())
    assert collate([plain[0]], pad_id=VOCAB.pad)["loss_weight"] is None
    with pytest.raises(ValueError, match="change_weight"):
        TokenShardDataset(tmp_path, VOCAB, change_weight=0.5)
    with pytest.raises(ValueError, match="output video tokens"):
        change_weights(ds[0], VOCAB, v, (0, 5), 3.0)


def test_resume_when_codes_were_lost_after_index(tmp_path: Path) -> None:
    """After a power loss the index may point past the end of the codes: those samples are redone."""
    extract(tmp_path, 6, _encoder_factory, progress=False)
    bin_ = tmp_path / "shard_00000.bin"
    full = bin_.stat().st_size
    with open(bin_, "r+b") as f:
        f.truncate(full - 8)  # the last sample lost its tail
    with pytest.raises(ValueError, match="shorter than its index"):
        TokenShards(tmp_path)
    counts = extract(tmp_path, 6, _encoder_factory, progress=False)
    assert counts == {"done_before": 4, "written": 1, "skipped": 1}
    shards = TokenShards(tmp_path)
    assert shards.indices == [0, 1, 2, 3, 4]
    for k, i in enumerate(shards.indices):
        _same_records(shards[k], _record(i))


def test_extract_tokens_script_end_to_end(tmp_path: Path) -> None:
    """Synthetic mp4s -> frozen (tiny, untrained) tokenizers -> shards, killed after 2 and resumed."""
    video = pytest.importorskip("kinema.tokenizers.video")
    from kinema.data.synthetic import write_dataset
    from kinema.media import read_video
    from kinema.tokenizers.audio import AudioCodec, AudioCodecConfig
    from kinema.tokenizers.text import TextTokenizer
    from kinema.lm.token_data import vocab_from_meta

    script = load_script("extract_tokens")
    torch.manual_seed(0)
    manifest = write_dataset(tmp_path / "data", clips=3, seconds=1.0, size=(32, 32), fps=8.0, workers=1)
    vt = video.VideoTokenizer(video.VideoTokenizerConfig.preset("tiny")).eval()
    vt.save_pretrained(tmp_path / "vt")
    vt = video.VideoTokenizer.from_pretrained(tmp_path / "vt").eval()
    AudioCodec(AudioCodecConfig.preset("tiny")).save_pretrained(tmp_path / "ac")
    args = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "tok"), "--size", "32", "32", "--frames", "9",
            "--video-tokenizer", str(tmp_path / "vt"), "--audio-codec", str(tmp_path / "ac"), "--kbps", "9.6"]
    assert script.main(args + ["--limit", "2"]) == 0
    assert len(TokenShards(tmp_path / "tok")) == 2
    assert script.main(args) == 0
    shards = TokenShards(tmp_path / "tok")
    assert shards.indices == [0, 1, 2]
    tt = TextTokenizer.from_pretrained()
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    for k in range(3):
        rec = shards[k]
        clip = read_video(tmp_path / "data" / records[k]["path"], fps=8.0, size=(32, 32))
        x = clip.to_model_input()[:, :, : (min(clip.num_frames, 9) - 1) // 4 * 4 + 1]
        np.testing.assert_array_equal(rec.arrays["video"], vt.encode(x)[0].numpy())
        assert rec.arrays["audio"].shape[0] == 2 and rec.text == tt.encode(records[k]["caption"])
    assert shards.meta["code_fingerprints"] == {"video_tokenizer": vt.code_fingerprint(),
                                                "audio_codec": AudioCodec.from_pretrained(tmp_path / "ac").code_fingerprint()}
    vocab = vocab_from_meta(shards.meta)
    ds = TokenShardDataset(shards, vocab, tasks=list(layout.TASKS))
    h, w = shards.shapes(0)["video"][1:]
    for i in range(3):
        assert layout.revert(ds[i].ids, vocab, video_hw=(h, w))["task"] == ds.plan(i).task
    assert script.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2


def test_extract_tokens_real_media(tmp_path: Path, media_dir: Path) -> None:
    """Real clips (one with sound, one damaged) go through extraction without crashing the run."""

    video = pytest.importorskip("kinema.tokenizers.video")
    from kinema.tokenizers.audio import AudioCodec, AudioCodecConfig

    script = load_script("extract_tokens")
    torch.manual_seed(0)
    video.VideoTokenizer(video.VideoTokenizerConfig.preset("tiny")).save_pretrained(tmp_path / "vt")
    AudioCodec(AudioCodecConfig.preset("tiny")).save_pretrained(tmp_path / "ac")
    names = ["tree.avi", "Megamind.avi", "Megamind_bugy.avi"]
    (tmp_path / "manifest.jsonl").write_text("".join(
        json.dumps({"path": str(media_dir / "video" / n), "caption": n, "start": 1.0}) + "\n" for n in names))
    rc = script.main(["--data", str(tmp_path), "--out", str(tmp_path / "tok"), "--size", "32", "32", "--frames", "9",
                      "--video-tokenizer", str(tmp_path / "vt"), "--audio-codec", str(tmp_path / "ac"), "--kbps", "9.6"])
    assert rc == 0
    shards = TokenShards(tmp_path / "tok")
    assert len(shards) >= 2  # the damaged file may be skipped, the good ones may not
    got = {shards[i].caption: shards.shapes(i) for i in range(len(shards))}
    assert got["tree.avi"]["video"][0] == 3 and "audio" in got["Megamind.avi"]
