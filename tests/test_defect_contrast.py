"""benchmarks/defect_contrast.py measures how much of each built-in defect lies beyond ε."""
from tests.benchmark_scripts import load_benchmark


def load_script():
    return load_benchmark("defect_contrast")


def test_defect_share_beyond_eps_falls_with_eps_and_covers_every_kind():
    from robustad.datasets.surface_defects import DEFECT_KINDS

    script = load_script()
    shares = {eps: script.defect_contrast("brick", 32, eps, grid=4) for eps in (0.0, 8 / 255, 1.0)}
    assert set(shares[0.0]) == set(DEFECT_KINDS)
    for kind in DEFECT_KINDS:
        low, mid, high = (shares[eps][kind] for eps in (0.0, 8 / 255, 1.0))
        assert low["pixels_beyond_eps"] >= mid["pixels_beyond_eps"] >= high["pixels_beyond_eps"] == 0.0
        assert high["fragile_patches"] == 1.0  # nothing changes by more than the whole range
        assert mid["pixels_beyond_2eps"] <= mid["pixels_beyond_eps"]  # 2ε is the stricter bound
        assert mid["fragile_patches_2eps"] >= mid["fragile_patches"]
        assert low["pixels_beyond_2eps"] == low["pixels_beyond_eps"]  # 2·0 = 0
        assert 0 < mid["median_change_255"] <= 255
    assert min(shares[0.0][kind]["pixels_beyond_eps"] for kind in DEFECT_KINDS) > 0.5  # defects change pixels


def test_pseudo_anomaly_contrast_falls_when_a_larger_change_is_required():
    script = load_script()
    loose = script.pseudo_anomaly_contrast("brick", 8 / 255, {"anomaly_min_change": "0"}, draws=1)
    strict = script.pseudo_anomaly_contrast("brick", 8 / 255, {"anomaly_min_change": "16/255"}, draws=1)
    assert loose["grid"] == 8 and loose["anomalous_patches"] > 100
    for result in (loose, strict):
        assert 0 <= result["no_pixel_beyond_eps"] <= result["no_pixel_beyond_2eps"] <= result["under_5pct_beyond_2eps"] <= 1
    # weak draws (blur, warps, JPEG of a smooth region) get a colour change until half the mask moved by > 2ε
    assert strict["no_pixel_beyond_2eps"] < loose["no_pixel_beyond_2eps"]
    assert strict["under_5pct_beyond_2eps"] < loose["under_5pct_beyond_2eps"]
    # each strict draw moves half its mask by more than 16/255, so the masks' median change is at least that
    assert strict["median_change"] >= 16 and 0 < loose["median_change"] <= strict["median_change"]
