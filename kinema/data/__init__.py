"""kinema.data: the synthetic world (:mod:`.synthetic`), clip datasets (:mod:`.datasets`) and
aspect-ratio buckets (:mod:`.buckets`)."""
from kinema.data.buckets import DEFAULT_BUCKETS, BucketBatchSampler, collate_clips, nearest_bucket
from kinema.data.datasets import SyntheticDataset, VideoFolderDataset
from kinema.data.synthetic import Scene, SynthClip, generate, render, sample_scene, write_dataset

__all__ = ["DEFAULT_BUCKETS", "BucketBatchSampler", "collate_clips", "nearest_bucket", "SyntheticDataset",
           "VideoFolderDataset", "Scene", "SynthClip", "generate", "render", "sample_scene", "write_dataset"]
