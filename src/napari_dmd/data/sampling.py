"""Seeded case split and random patch sampling with foreground oversampling and padding.

Arrays hold spatial axes only: ``(z, y, x)`` or ``(y, x)`` (see ``docs/architecture.md``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from napari_dmd.data.transforms import augment as augment_patch
from napari_dmd.data.transforms import zoom_rotate

MAX_FG_INDICES_PER_CLASS = 10_000


def split_cases(
    n: int, val_fraction: float = 0.2, seed: int = 0, *, min_val: int = 1
) -> tuple[list[int], list[int]]:
    """Split case indices ``0..n-1`` into sorted (train, val) lists, seeded and deterministic.

    ``round(n * val_fraction)`` validation cases, at least ``min_val`` when ``n >= 2`` and always at least
    one training case; ``n == 1`` gives an empty validation list.
    """
    if n < 0:
        raise ValueError(f"number of cases must be >= 0, got {n}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if min_val < 0:
        raise ValueError(f"min_val must be >= 0, got {min_val}")
    if n < 2:
        return list(range(n)), []
    n_val = max(int(round(n * val_fraction)), min_val)
    n_val = min(n_val, n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    val = sorted(int(i) for i in perm[:n_val])
    train = sorted(int(i) for i in perm[n_val:])
    return train, val


def crop_pad(
    image: np.ndarray,
    label: np.ndarray | None,
    src: tuple[slice, ...],
    dst: tuple[slice, ...],
    patch_size: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray | None]:
    """Patch of ``image`` (float32) and ``label`` (int64): ``src`` region copied into ``dst`` of a zero patch.

    NumPy, not MONAI's ``SpatialCrop`` + ``SpatialPad``: the same result, 4-70x faster per patch
    (``benchmarks/bench_data_pipeline.py``). Zero padding: image 0 (the mean after z-score), label 0.
    """
    patch_img = np.zeros(patch_size, dtype=np.float32)
    patch_img[dst] = image[src]
    if label is None:
        return patch_img, None
    patch_lab = np.zeros(patch_size, dtype=np.int64)
    patch_lab[dst] = label[src]
    return patch_img, patch_lab


class PatchSampler:
    """Draws random training batches of fixed-size patches from a list of cases.

    ``images`` are normalized float32 spatial arrays (2D ``(y, x)`` or 3D ``(z, y, x)``), ``labels`` integer
    arrays of the same shape or ``None`` (unlabelled case). With ``spatial_dims == 2`` a 3D case gives a
    2D patch from a random slice along axis 0. With probability ``fg_fraction`` a labelled sample is
    centred (with jitter) on a voxel of a random foreground class present in the case. Volumes smaller
    than the patch are zero-padded (image 0 = the mean after z-score, label 0 = background). ``focus``: per
    case a boolean mask (or None) of voxels to centre a ``focus_fraction`` of the samples on (a corrections
    round's painted voxels); without it the stream is the one it always was.

    All randomness comes from one ``np.random.Generator``; ``state_dict`` / ``load_state_dict`` make a
    resumed sampler produce exactly the same future batches.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray | None],
        patch_size: Sequence[int],
        *,
        batch_size: int = 2,
        spatial_dims: int | None = None,
        fg_fraction: float = 0.33,
        num_classes: int | None = None,
        augment: bool = True,
        flips: bool = True,
        spatial: bool = False,
        ignore_index: int = 255,
        seed: int = 0,
        focus: Sequence[np.ndarray | None] | None = None,
        focus_fraction: float = 0.5,
    ) -> None:
        if len(images) == 0:
            raise ValueError("PatchSampler needs at least one case")
        if len(labels) != len(images):
            raise ValueError(
                f"got {len(images)} images but {len(labels)} labels (use None for unlabelled cases)"
            )
        ndims = {np.ndim(im) for im in images}
        if not ndims <= {2, 3}:
            raise ValueError(f"images must be 2D (y, x) or 3D (z, y, x); got ndims {sorted(ndims)}")
        if spatial_dims is None:
            spatial_dims = int(np.ndim(images[0]))
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if spatial_dims == 3 and 2 in ndims:
            raise ValueError("spatial_dims=3 but some cases are 2D images")
        patch = tuple(int(p) for p in patch_size)
        if len(patch) != spatial_dims:
            raise ValueError(
                f"patch_size {tuple(patch_size)} has {len(patch)} entries but spatial_dims is {spatial_dims}"
            )
        if any(p < 1 for p in patch):
            raise ValueError(f"patch_size entries must be >= 1, got {tuple(patch_size)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= fg_fraction <= 1.0:
            raise ValueError(f"fg_fraction must be in [0, 1], got {fg_fraction}")

        self.patch_size = patch
        self.batch_size = int(batch_size)
        self.spatial_dims = spatial_dims
        self.fg_fraction = float(fg_fraction)
        self.num_classes = num_classes
        self.augment = bool(augment)
        self.flips = bool(flips)  # with augment: random flips and rot90 (off: intensity changes only)
        self.spatial = bool(spatial)  # with augment: random in-plane zoom and rotation (zoom_rotate)
        self.ignore_index = int(ignore_index)
        self.seed = seed

        self._images: list[np.ndarray] = []
        self._labels: list[np.ndarray | None] = []
        # per case: {class: flat voxel indices (subsampled)}; empty for unlabelled / background-only cases
        self._fg: list[dict[int, np.ndarray]] = []
        init_rng = np.random.default_rng([int(seed), 0x5EED])  # subsampling only; independent of the stream
        for i, (img, lab) in enumerate(zip(images, labels)):
            img = np.asarray(img, dtype=np.float32)
            if lab is not None:
                lab = np.asarray(lab)
                if lab.shape != img.shape:
                    raise ValueError(
                        f"case {i}: label shape {lab.shape} differs from image shape {img.shape}"
                    )
                if not np.issubdtype(lab.dtype, np.integer):
                    raise ValueError(f"case {i}: labels must be integers, got dtype {lab.dtype}")
            self._images.append(img)
            self._labels.append(lab)
            self._fg.append(self._foreground_indices(i, lab, init_rng))
        self._focus = self._focus_indices(focus, seed)
        self._focus_cases = [i for i, f in enumerate(self._focus) if f is not None]
        if not 0.0 <= focus_fraction <= 1.0:
            raise ValueError(f"focus_fraction must be in [0, 1], got {focus_fraction}")
        self.focus_fraction = float(focus_fraction)
        self._rng = np.random.default_rng(seed)

    def _focus_indices(self, focus: Sequence[np.ndarray | None] | None, seed: int) -> list[np.ndarray | None]:
        """Flat indices of each case's focus voxels (e.g. painted corrections), subsampled like the foreground.

        With focus voxels, a sample is centred on one of them with probability ``focus_fraction`` (a case with
        focus chosen uniformly); without any, sampling draws exactly as before (the same random stream).
        """
        if focus is None:
            return [None] * len(self._images)
        if len(focus) != len(self._images):
            raise ValueError(f"got {len(focus)} focus masks for {len(self._images)} cases (use None for a case)")
        rng = np.random.default_rng([int(seed), 0xF0C5])
        out: list[np.ndarray | None] = []
        for i, mask in enumerate(focus):
            if mask is None:
                out.append(None)
                continue
            if np.shape(mask) != self._images[i].shape:
                raise ValueError(f"case {i}: focus mask shape {np.shape(mask)} differs from image shape "
                                 f"{self._images[i].shape}")
            idx = np.flatnonzero(np.asarray(mask).reshape(-1))
            if idx.size > MAX_FG_INDICES_PER_CLASS:
                idx = np.sort(rng.choice(idx, MAX_FG_INDICES_PER_CLASS, replace=False))
            out.append(idx.astype(np.int64) if idx.size else None)
        return out

    def _foreground_indices(
        self, case: int, lab: np.ndarray | None, rng: np.random.Generator
    ) -> dict[int, np.ndarray]:
        """Flat indices of each foreground class's voxels, at most ``MAX_FG_INDICES_PER_CLASS`` per class."""
        if lab is None:
            return {}
        flat = lab.reshape(-1)
        fg_idx = np.flatnonzero((flat != 0) & (flat != self.ignore_index))
        if fg_idx.size == 0:
            return {}
        values = flat[fg_idx]
        classes = np.unique(values)
        if self.num_classes is not None and (classes.min() < 0 or classes.max() >= self.num_classes):
            raise ValueError(
                f"case {case}: label values {classes.tolist()} outside 0..{self.num_classes - 1} "
                f"(and ignore_index {self.ignore_index})"
            )
        out: dict[int, np.ndarray] = {}
        for c in classes:
            idx = fg_idx[values == c]
            if idx.size > MAX_FG_INDICES_PER_CLASS:
                idx = np.sort(rng.choice(idx, MAX_FG_INDICES_PER_CLASS, replace=False))
            out[int(c)] = idx.astype(np.int64, copy=False)
        return out

    @property
    def num_cases(self) -> int:
        """Number of cases."""
        return len(self._images)

    # ------------------------------------------------------------------ sampling
    def _start(self, size: int, patch: int, centre: int | None) -> int:
        """Patch start along one axis: random, or around ``centre`` with jitter (``centre`` stays inside)."""
        hi = max(size - patch, 0)
        if centre is None:
            return int(self._rng.integers(hi + 1))
        offset = int(self._rng.integers(patch // 4, patch - patch // 4))
        return min(max(centre - offset, 0), hi)

    def _sample_one(self) -> tuple[np.ndarray, np.ndarray, bool]:
        rng = self._rng
        focus = self._focus_cases
        centre: tuple[int, ...] | None = None
        if focus and rng.random() < self.focus_fraction:  # centred on a focus voxel (e.g. a painted correction)
            case = focus[int(rng.integers(len(focus)))]
            idx = self._focus[case]
            assert idx is not None
            centre = tuple(int(c) for c in np.unravel_index(int(idx[int(rng.integers(idx.size))]),
                                                            self._images[case].shape))
        else:
            case = int(rng.integers(self.num_cases))
        img = self._images[case]
        lab = self._labels[case]
        fg = self._fg[case]
        if centre is None and fg and rng.random() < self.fg_fraction:
            classes = sorted(fg)
            cls = classes[int(rng.integers(len(classes)))]
            idx = fg[cls]
            flat = int(idx[int(rng.integers(idx.size))])
            centre = tuple(int(c) for c in np.unravel_index(flat, img.shape))
        if self.spatial_dims == 2 and img.ndim == 3:
            z = centre[0] if centre is not None else int(rng.integers(img.shape[0]))
            img = img[z]
            lab = lab[z] if lab is not None else None
            centre = centre[1:] if centre is not None else None

        src, dst = [], []
        for ax, (size, p) in enumerate(zip(img.shape, self.patch_size)):
            start = self._start(size, p, None if centre is None else centre[ax])
            if size >= p:
                src.append(slice(start, start + p))
                dst.append(slice(0, p))
            else:  # pad: centre the whole axis inside the patch
                before = (p - size) // 2
                src.append(slice(0, size))
                dst.append(slice(before, before + size))
        patch_img, patch_lab = crop_pad(img, lab, tuple(src), tuple(dst), self.patch_size)
        if self.augment:
            if self.spatial:
                patch_img, patch_lab = zoom_rotate(patch_img, patch_lab, rng)
            patch_img, patch_lab = augment_patch(patch_img, patch_lab, rng, flip=self.flips, rot90=self.flips)
        has_label = patch_lab is not None
        if patch_lab is None:
            patch_lab = np.full(self.patch_size, self.ignore_index, dtype=np.int64)
        return patch_img, patch_lab, has_label

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One batch: images ``(B, 1, *patch)`` float32, labels ``(B, *patch)`` int64, has_label ``(B,)``.

        Unlabelled samples have labels filled with ``ignore_index`` and ``has_label`` False.
        """
        images = np.empty((self.batch_size, 1, *self.patch_size), dtype=np.float32)
        labels = np.empty((self.batch_size, *self.patch_size), dtype=np.int64)
        has_label = np.empty(self.batch_size, dtype=bool)
        for b in range(self.batch_size):
            images[b, 0], labels[b], has_label[b] = self._sample_one()
        return images, labels, has_label

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Endless stream of batches."""
        while True:
            yield self.sample()

    # ------------------------------------------------------------------ resume
    def reseed(self, seed: int | Sequence[int]) -> None:
        """Restart the random stream from ``seed`` (an int or a sequence of ints, as for ``default_rng``)."""
        self._rng = np.random.default_rng(seed)

    def state_dict(self) -> dict:
        """JSON-serialisable state of the random stream (the bit generator state)."""
        return {"bit_generator": copy.deepcopy(self._rng.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        """Restore the random stream saved by ``state_dict`` (future batches then repeat exactly)."""
        bg_state = state.get("bit_generator") if isinstance(state, dict) else None
        if not isinstance(bg_state, dict) or "bit_generator" not in bg_state:
            raise ValueError("sampler state must be a dict from PatchSampler.state_dict()")
        name = type(self._rng.bit_generator).__name__
        if bg_state["bit_generator"] != name:
            raise ValueError(
                f"sampler state is for bit generator {bg_state['bit_generator']!r}, expected {name!r}"
            )
        self._rng.bit_generator.state = copy.deepcopy(bg_state)


def worker_seed(seed: int, rank: int, worker: int, start: int) -> list[int]:
    """Entropy of one data-loading worker's stream: config seed, DDP rank, worker id, first iteration."""
    return [int(seed), int(rank), int(worker), int(start), 0x3017]


class PatchStream(IterableDataset):
    """Endless batches of a :class:`PatchSampler` for ``torch.utils.data.DataLoader`` worker processes.

    Each worker draws from its own stream, seeded by :func:`worker_seed` ``(seed, rank, worker id, start)``,
    so ranks and workers give different patches and a run resumed at iteration ``start`` is deterministic
    for a given worker count. The sampler (all case images) reaches a worker once, when it starts (shared
    by fork, pickled by spawn); per batch only the batch itself travels. Use ``batch_size=None``.
    """

    def __init__(self, sampler: PatchSampler, *, seed: int, rank: int = 0, start: int = 0) -> None:
        super().__init__()
        self.sampler, self.seed, self.rank, self.start = sampler, seed, rank, start

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        sampler = copy.copy(self.sampler)  # shares the images; its own random stream
        sampler.reseed(worker_seed(self.seed, self.rank, info.id if info is not None else 0, self.start))
        while True:
            images, labels, has_label = sampler.sample()
            yield torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(has_label)
