"""Published figures (`bench/results/reference.py`): the shipped paper CSVs, a user's CSV, and their errors."""
import pytest

from robustad.bench.results.reference import ReferenceError, config_key, load_reference, parse_config_text

USER_CSV = """table,method,dataset,category,task,attack,clean,adversarial,norm,eps,metric,paper_label,note
T1,mydefense,textures,brick,AD,pgd-5,91.5,40.25,linf,8/255,image_auroc,My defense,
T1,mydefense,textures,mean,AL,pgd-5,80.0,,linf,8/255,pixel_auroc,My defense,no adversarial figure
"""


def test_the_paper_reference_names_its_source_and_holds_every_table():
    reference = load_reference("paper")
    assert "CVPR 2025" in reference.source and "2506.09237" in reference.source
    assert reference.tables() == [f"T{n}" for n in range(1, 22)]
    assert len(reference.rows) == 406 + 264  # the data rows of the two shipped CSVs


def test_lookup_maps_the_task_to_robustad_objectives_and_keeps_attack_budgets_apart():
    reference = load_reference("paper")
    mvtec = dict(method="patchguard", dataset="mvtec", category="mean")
    detection = reference.lookup(**mvtec, task="detection", attack="pgd-1000")
    assert (detection.table, detection.clean, detection.adversarial, detection.label) == ("T1", 88.1, 71.1, "Ours")
    assert reference.lookup(**mvtec, task="AD", attack="pgd", steps=1000) == detection
    localization = reference.lookup(**mvtec, task="localization", attack="pgd-1000")
    assert (localization.table, localization.adversarial) == ("T2", 73.8)
    assert reference.lookup(**mvtec, task="detection", attack="pgd-20") is None  # never PGD-20 beside PGD-1000
    assert reference.lookup(**mvtec, task="localization", attack="sea").adversarial == 71.3  # Table 4
    assert reference.lookup(**mvtec, task="detection", attack="pgd-1000", table="T4").table == "T4"


def test_lookup_matches_config_variants_and_other_threat_models():
    reference = load_reference("paper")
    mvtec = dict(method="patchguard", dataset="mvtec", category="mean", task="detection", attack="pgd-1000")
    assert reference.lookup(**mvtec, config={"alpha": 0.0}).adversarial == 60.7  # Table 5, "0" and 0.0 are one
    assert reference.lookup(**mvtec, config={"alpha": "0"}).label == "0"
    assert reference.lookup(**mvtec, config={"adv_train": False}).table == "T7"
    assert reference.lookup(**mvtec, config={"reg_layers": [-2]}).label == "layer N-1"
    l2 = reference.lookup(**mvtec, norm="l2", eps="64/255")
    assert (l2.table, l2.clean) == ("T21", None)
    assert reference.lookup(**mvtec, eps="2/255", config={"train_eps": "2/255"}).table == "T20"
    assert reference.lookup(**mvtec, config={"alpha": 3}) is None
    per_class = reference.lookup(method="patchguard", dataset="mvtec", category="bottle", task="AL", attack="pgd-1000")
    assert per_class.table == "T13" and per_class.note


def test_every_published_variant_names_the_config_that_runs_it():
    reference = load_reference("paper")
    rows = reference.matching(table="T10", any_config=True)
    assert len(rows) == 16 and {row.config_text for row in rows} == {"backbone=resnet50 alpha=0", "backbone=unet alpha=0"}
    assert all(row.config is not None for row in reference.matching(any_config=True))
    assert parse_config_text("vit_embed_dim=768 vit_depth=12") == ({"vit_embed_dim": "768", "vit_depth": "12"}, "")
    assert parse_config_text("train_eps=4/255 (and --eps 4/255)") == ({"train_eps": "4/255"}, "and --eps 4/255")
    assert config_key({"alpha": "1"}) == config_key({"alpha": 1.0})


def test_an_override_equal_to_the_methods_default_is_the_default_model():
    reference = load_reference("paper")
    defaults = {"alpha": 1.0, "reg_layers": (-1,), "train_eps": 8 / 255}
    mvtec = dict(method="patchguard", dataset="mvtec", category="mean", task="detection", attack="pgd-1000")
    assert reference.lookup(**mvtec, table="T5") is None  # the row says alpha=1, the record nothing
    assert reference.lookup(**mvtec, table="T5", defaults=defaults).label == "1 (Ours)"
    assert reference.lookup(**mvtec, table="T12", defaults=defaults).label == "layer N (last, ours)"
    assert reference.lookup(**mvtec, config={"alpha": 1}, defaults=defaults).table == "T1"
    assert reference.lookup(**mvtec, config={"alpha": 0}, defaults=defaults).label == "0"
    assert config_key({"train_eps": "8/255", "alpha": "2"}, defaults) == (("alpha", 2.0),)


def test_a_users_csv_is_a_reference_too(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text(USER_CSV)
    reference = load_reference(str(path))
    assert reference.source == str(path.resolve())
    value = reference.lookup(method="mydefense", dataset="textures", category="brick", task="detection",
                             attack="pgd-5")
    assert (value.clean, value.adversarial, value.label) == (91.5, 40.25, "My defense")
    missing = reference.lookup(method="mydefense", dataset="textures", category="mean", task="localization",
                               attack="pgd-5")
    assert missing.adversarial is None and missing.note == "no adversarial figure"


@pytest.mark.parametrize("text, expected", [
    ("a,b,c\n1,2,3\n", "is neither the results format"),
    (USER_CSV.replace("91.5", "915"), "line 2: clean '915': expected an AUROC in percent"),
    (USER_CSV.replace(",AD,", ",XX,"), "line 2: task 'XX': expected AD or AL"),
    (USER_CSV.replace("8/255,image", "8/zero,image"), "line 2: '8/zero' is not a number"),
    (USER_CSV.splitlines()[0] + "\n", "no rows under the header"),
])
def test_a_bad_reference_file_is_named_with_its_line(tmp_path, text, expected):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ReferenceError, match=f"reference file {path}.*{expected}"):
        load_reference(str(path))


def test_a_missing_reference_file_says_what_was_expected(tmp_path):
    with pytest.raises(ReferenceError, match="expected 'paper' or the path of a CSV file"):
        load_reference(str(tmp_path / "nowhere.csv"))
