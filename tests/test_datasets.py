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


def test_manifest_and_mp4s_match_the_renderer(tmp_path):
    import json

    from kinema.data.synthetic import generate
    from kinema.media import read_video

    manifest = write_dataset(tmp_path, clips=3, seconds=1.0, size=(96, 64), fps=8, seed=11, workers=2)
    recs = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["seed"] for r in recs] == [11, 12, 13]
    for r in recs:
        ref = generate(r["seed"], size=(96, 64), fps=8, seconds=1.0)
        assert r["caption"] == ref.caption and len(r["truth"]) == 8 and r["truth"][3][0]["x"] == ref.truth[3][0]["x"]
        clip = read_video(tmp_path / r["path"], audio=True, sample_rate=16000, mono=True)
        assert clip.frames.shape == (8, 64, 96, 3)
        assert (clip.frames.float() - ref.frames.float()).abs().mean() < 6  # lossy codec, same picture
        assert clip.audio is not None and abs(clip.audio.shape[1] - 16000) < 1200


def test_folder_dataset_skips_damaged_files_and_reseeds_windows(tmp_path):
    import pytest

    write_dataset(tmp_path, clips=2, seconds=4.0, size=(64, 64), fps=8, seed=3, workers=1)
    (tmp_path / "aaa_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    ds = VideoFolderDataset(tmp_path, num_frames=5, fps=8, size=(64, 64))
    assert ds.files[0].name == "aaa_broken.mp4"
    with pytest.warns(UserWarning, match="aaa_broken"):
        item = ds[0]
    assert item["video"].shape == (3, 5, 64, 64) and not item["path"].endswith("aaa_broken.mp4")
    i = 1
    first = ds[i]["video"]
    assert torch.equal(first, ds[i]["video"])  # same epoch, same window
    windows = []
    for epoch in range(1, 6):
        ds.set_epoch(epoch)
        windows.append(ds[i]["video"])
    assert any(not torch.equal(first, w) for w in windows)


def test_synthetic_dataset_buckets_with_two_workers():
    ds = SyntheticDataset(8, seed=2, size=None, num_frames=3, audio=True)
    keys = [ds.target_size(i) for i in range(len(ds))]
    assert len(set(keys)) > 1
    loader = DataLoader(ds, batch_sampler=BucketBatchSampler(ds.target_size, batch_size=3, num_items=len(ds)),
                        collate_fn=collate_clips, num_workers=2)
    n = 0
    for batch in loader:
        w, h = ds.target_size(int(batch["path"][0].split(":")[1]) - 2)
        assert batch["video"].shape[1:] == (3, 3, h, w) and batch["audio"].shape[1:] == (1, 6000)
        n += batch["video"].shape[0]
    assert n == 8
