"""Config variants of one method (e.g. `--config adv_train=false`) stay apart in tables."""
import json
import shutil
from pathlib import Path

from robustad.bench.report.tables import build_table, load_records

FIXTURES = Path(__file__).parent / "data" / "records"


def test_variants_get_their_own_column_and_filters_match_the_base_name(tmp_path):
    folder = tmp_path / "records"
    folder.mkdir()
    source = next(p for p in sorted(FIXTURES.glob("*.json")) if json.loads(p.read_text()).get("error") is None)
    shutil.copy(source, folder / source.name)
    record = json.loads(source.read_text())
    variant = {**record, "cell_id": record["cell_id"] + "__variant", "config_overrides": {"adv_train": "false"},
               "adversarial": {k: (v - 10 if v is not None else None) for k, v in record["adversarial"].items()}}
    (folder / "variant.json").write_text(json.dumps(variant))
    records, problems = load_records(tmp_path)
    assert not problems
    names = sorted(r.method_label for r in records)
    assert names == sorted([record["method"], f"{record['method']} (adv_train=false)"])
    table = build_table(records, layout="methods", task="al", fmt="markdown", method=record["method"])
    assert "(adv_train=false)" in table
    assert len(load_records(tmp_path)[0]) == 2  # loading twice does not rename twice
