import pytest
import torch

# The tests' models are tiny: one thread each. With another job on the other core of the 2-core machine,
# 20 steps of TINY pretraining measured 3 s with one thread and 60-120 s with two (each of OpenMP's
# threads waits for the slowest, on a busy core); subprocess runs get OMP_NUM_THREADS=1 for the same reason.
torch.set_num_threads(1)


def blocks_dataset(n: int = 512, size: int = 40, seed: int = 0) -> torch.Tensor:
    """uint8 images of coloured rectangles on a coloured ground: structure to learn, made in milliseconds."""
    gen = torch.Generator().manual_seed(seed)
    imgs = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for i in range(n):
        imgs[i] = (torch.rand(3, 1, 1, generator=gen) * 255).to(torch.uint8)
        for _ in range(3):
            x0, y0 = torch.randint(0, size - 10, (2,), generator=gen).tolist()
            w, h = torch.randint(8, size // 2, (2,), generator=gen).tolist()
            imgs[i, :, y0:y0 + h, x0:x0 + w] = (torch.rand(3, 1, 1, generator=gen) * 255).to(torch.uint8)
    return imgs


@pytest.fixture(scope="session")
def blocks():
    return blocks_dataset()


# A pretraining setting small enough for a unit test on two CPU cores.
TINY = dict(image_size=32, width=8, proj_hidden=256, pred_hidden=256, proj_dim=64, batch_size=32,
            progress=False, rank_every=0)


def interrupt_after_first_checkpoint(monkeypatch):
    """Makes the next pretraining run stop with KeyboardInterrupt right after its first checkpoint.

    Returns a function that undoes it, so the run can then be resumed."""
    import byol_lite.pretrain as pretrain_module

    real_save = pretrain_module.save_backbone

    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_module, "save_backbone", save_then_interrupt)
    return lambda: monkeypatch.setattr(pretrain_module, "save_backbone", real_save)


def assert_same_run(a, b) -> None:
    """Two pretraining results with equal weights (every tensor of the state_dict) and equal logged
    rows, throughput aside: what an exact resume must give."""
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    drop = lambda h: [{k: v for k, v in r.items() if k != "images_per_s"} for r in h]
    assert drop(a.history) == drop(b.history)
