"""Datasets and aspect-ratio buckets."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from kinema.data.buckets import BucketBatchSampler, collate_clips, nearest_bucket
from kinema.data.datasets import SyntheticDataset, VideoFolderDataset
from kinema.data.synthetic import write_dataset
from kinema.media import Clip, write_video


def test_nearest_bucket():
    assert nearest_bucket(1920, 1080) == (176, 96)
    assert nearest_bucket(720, 528) == (144, 112)
    assert nearest_bucket(480, 640) == (112, 144)


def test_bucket_sampler_groups_equal_keys():
    keys = ["a", "b", "a", "a", "b", "c", "a"]
    sampler = BucketBatchSampler(keys, batch_size=2, seed=1)
    seen = []
    for batch in sampler:
        assert len({keys[i] for i in batch}) == 1
        seen.extend(batch)
    assert sorted(seen) == list(range(len(keys)))
    assert len(list(BucketBatchSampler(keys, batch_size=2, drop_last=True))) == 3


def test_folder_dataset_windows_buckets_and_workers(tmp_path):
    write_dataset(tmp_path, clips=4, seconds=3.0, size=(128, 128), fps=8, seed=0, workers=1)
    wide = (torch.rand(24, 90, 160, 3) * 255).to(torch.uint8)
    write_video(tmp_path / "wide.mp4", Clip(wide, 8.0))
    (tmp_path / "wide.txt").write_text("a wide clip\n")
    ds = VideoFolderDataset(tmp_path, num_frames=9, fps=8, size=None, audio=True)
    assert len(ds) == 5
    keys = [ds.target_size(i) for i in range(len(ds))]
    assert keys.count((128, 128)) == 4 and (176, 96) in keys
    item = ds[0]
    assert item["video"].shape == (3, 9, 128, 128) and item["audio"].shape == (1, 9 * 2000)
    assert item["video"].min() >= -1 and item["video"].max() <= 1 and "background" in item["caption"]
    assert ds.caption(ds.files.index(tmp_path / "wide.mp4")) == "a wide clip"
    loader = DataLoader(ds, batch_sampler=BucketBatchSampler(keys, batch_size=2), collate_fn=collate_clips,
                        num_workers=2)
    shapes = [tuple(b["video"].shape[2:]) for b in loader]
    assert sorted(shapes) == sorted([(9, 128, 128), (9, 128, 128), (9, 96, 176)])


def test_synthetic_dataset():
    ds = SyntheticDataset(3, seed=7, num_frames=5, audio=True)
    a = ds[1]
    assert a["video"].shape == (3, 5, 128, 128) and a["audio"].shape[0] == 1
    assert torch.equal(a["video"], ds[1]["video"])
