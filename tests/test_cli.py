"""The thin CLI: listing registries, the attention-degree report, data info."""

from robustad.attacks import ATTACKS
from robustad.bench.cli import main
from robustad.datasets import DATASETS
from robustad.methods import METHODS


def test_list_prints_every_registered_entry_with_a_description(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for registry in (METHODS, ATTACKS, DATASETS):
        for entry in registry.entries():
            assert entry.name in out
            assert entry.description, f"{entry.name} has no one-line description"
    assert main(["list", "attacks"]) == 0
    assert "patchguard" not in capsys.readouterr().out


def test_attention_degree_report_writes_figure_and_tables(mvtec_root, tmp_path, capsys):
    tiny = ["--config", "image_size=32", "--config", "patch_size=8", "--config", "vit_embed_dim=32",
            "--config", "vit_depth=2", "--config", "vit_heads=2", "--config", "disc_heads=2",
            "--config", "disc_mlp_dim=32", "--config", "epochs=1", "--config", "adv_train=false"]
    code = main(["attention-degree", "--dataset", "mvtec", "--root", str(mvtec_root), "--category", "alpha",
                 "--steps", "2", "--groups", "3", "--results", str(tmp_path), "--out", str(tmp_path / "fig2"), *tiny])
    assert code == 0
    assert (tmp_path / "fig2" / "attention_degree.png").stat().st_size > 0
    clusters = (tmp_path / "fig2" / "attention_degree_clusters.csv").read_text().splitlines()
    assert clusters[0].startswith("cluster,images,attention_degree") and len(clusters) == 4
    assert "vulnerability" in capsys.readouterr().out


def test_attention_degree_refuses_a_method_without_attention(mvtec_root, tmp_path, capsys):
    code = main(["attention-degree", "--method", "tests.tiny_detector:TinyDetector", "--dataset", "mvtec",
                 "--root", str(mvtec_root), "--category", "alpha", "--results", str(tmp_path)])
    assert code == 2 and "attention" in capsys.readouterr().err


def test_data_info_json_and_wrong_root(mvtec_root, tmp_path, capsys):
    import json

    assert main(["data", "info", "--dataset", "mvtec", "--root", str(mvtec_root), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["categories"]["alpha"]["test_anomalous"] == 6
    assert main(["data", "info", "--dataset", "mvtec", "--root", str(tmp_path / "nowhere")]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    # DATASET=DIR, as `bench run` takes it: the dataset's own root, not another's
    assert main(["data", "info", "--dataset", "mvtec", "--root", f"mvtec={mvtec_root}",
                 "--root", f"visa={tmp_path / 'nowhere'}", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["categories"]["alpha"]["test_anomalous"] == 6


def test_attack_options_are_passed_recorded_and_kept_apart_in_tables(mvtec_root, tmp_path, capsys):
    import json

    run = ["run", "--method", "tests.tiny_detector:TinyDetector", "--dataset", "mvtec", "--root", str(mvtec_root),
           "--category", "alpha", "--attack", "pgd", "--steps", "3", "--results", str(tmp_path)]
    assert main(run) == 0
    assert main([*run, "--attack-option", "keep_best=false", "--attack-option", "random_start=true"]) == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")]
    assert sorted(r["attack_options"].get("keep_best", True) for r in records) == [False, True]
    with_options = next(r for r in records if r["attack_options"])
    assert with_options["attack_options"] == {"keep_best": False, "random_start": True}
    assert with_options["attack_config"]["keep_best"] is False and with_options["attack_config"]["random_start"]
    capsys.readouterr()
    assert main(["table", "--results", str(tmp_path), "--layout", "attacks", "--format", "csv"]) == 0
    header = capsys.readouterr().out.splitlines()
    assert any("PGD-3 [keep_best=False, random_start=True]" in line for line in header)
    # an option the attack does not take is refused before anything runs, naming the valid ones
    assert main([*run, "--attack-option", "lossess=js"]) == 2
    err = capsys.readouterr().err
    assert "lossess" in err and "keep_best" in err
    assert main([*run, "--attack-option", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
