"""`bench report`: the static HTML report (issue #28) — leaderboards, drill-downs, links to records,
flags fired by crafted records and not by real ones, escaping, reference figures, and a real browser
(headless Chromium) loading it from file://."""
import html.parser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from robustad.bench.cli import main
from robustad.bench.report.html import write_report
from tests.report_records import TINY, crafted, write_records

FLAGGING = ("black-box", "composite", "inverted", "missing")


@pytest.fixture
def tiny_run(tiny_report_run):
    return tiny_report_run


class Page(html.parser.HTMLParser):
    """Links, images, leaderboard rows and flags of one HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.links, self.images, self.rows, self.flags, self.scripts, self.ids = [], [], [], [], 0, set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "tr" and "leaderboard-row" in (attrs.get("class") or ""):
            self.rows.append(attrs)
        if "data-flag" in attrs:
            self.flags.append(attrs["data-flag"])
        if tag == "script":
            self.scripts += 1


def pages(site: Path) -> dict[Path, Page]:
    return {path: Page(path.read_text()) for path in site.rglob("*.html")}


def flag_kinds(site: Path) -> set[str]:
    return set(Page((site / "index.html").read_text()).flags)


def report(results, out, **kw) -> Path:
    write_report(results, out, log=lambda m: None, **kw)
    return out


def test_report_of_real_records_links_every_number_to_a_record(tiny_run, tmp_path, capsys):
    results, records = tiny_run
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "site")]) == 0
    site = tmp_path / "site"
    assert capsys.readouterr().out.strip() == str(site / "index.html")
    all_pages = pages(site)
    index = all_pages[site / "index.html"]
    assert len(index.rows) == 2  # one method, AD and AL
    assert {r["data-method"] for r in index.rows} == {TINY}
    for path, page in all_pages.items():
        for link in page.links + page.images:
            assert not re.match(r"[a-z]+://", link), f"{path}: an external link {link}"
            file, _, anchor = link.partition("#")
            target = (path.parent / file).resolve() if file else path
            assert target.is_file(), f"{path}: broken link {link}"
            if anchor:
                assert anchor in all_pages[target].ids, f"{path}: link {link} to a missing anchor"
    copied = {p.name for p in (site / "records").glob("*.json")}
    assert copied == {f"{r.cell_id}.json" for r in records}
    # every measured value of a category page links to a record copy
    category_pages = [p for p in all_pages if p.parent.name == "categories"]
    assert len(category_pages) == 2
    for path in category_pages:
        text = path.read_text()
        values = re.findall(r'<a class="value" href="([^"]+)"[^>]*>([0-9.]+)</a>', text)
        assert len(values) == 2 * 4  # AD and AL × (clean, FGSM, PGD-1, PGD-3)
        assert all(href.startswith("../records/") for href, _ in values)
        assert len(all_pages[path].images) == len(records) // 2  # Figure 1 of each cell of the category
    # a category page's PGD-3 pixel value is the record's
    record = next(r for r in records if r.category == "alpha" and r.steps == 3)
    alpha = next(p for p in category_pages if "alpha" in p.name).read_text()
    assert f'href="../records/{record.cell_id}.json" title="record {record.cell_id}">' \
           f'{record.adversarial.pixel_auroc:.1f}</a>' in alpha
    # only the profile flag fires on these records (quick profile, none of the others)
    assert flag_kinds(site) == {"profile"}


def test_no_flag_fires_on_sound_paper_profile_records(tiny_run, tmp_path):
    _, records = tiny_run
    results = write_records(tmp_path / "results", [crafted(r, suffix="", profile="paper") for r in records])
    site = report(results, tmp_path / "site")
    assert flag_kinds(site) == set()


def _pgd3(records, category="alpha"):
    return next(r for r in records if r.category == category and r.steps == 3)


def test_a_black_box_attack_stronger_than_every_white_box_one_is_flagged(tiny_run, tmp_path):
    _, records = tiny_run
    pgd = _pgd3(records)
    best = min(r.adversarial.image_auroc for r in records if r.category == "alpha")
    square = crafted(pgd, suffix="-square", attack="square", steps=5000, adversarial={"image_auroc": max(0.0, best - 5)})
    other = _pgd3(records, "beta")  # square on the other category too, as strong as PGD there: no mean misses it
    beta = crafted(other, suffix="-square", attack="square", steps=5000)
    results = write_records(tmp_path / "results", [crafted(r, suffix="", profile="paper")
                                                   for r in records + [square, beta]])
    site = report(results, tmp_path / "site")
    assert flag_kinds(site) == {"black-box"}
    index = (site / "index.html").read_text()
    assert f"records/{square.cell_id}.json" in index
    # as strong as the white-box attacks: no flag
    even = crafted(pgd, suffix="-square", attack="square", steps=5000, profile="paper",
                   adversarial={"image_auroc": best})
    write_records(results, [even])
    assert flag_kinds(report(results, tmp_path / "site2")) == set()


def test_a_composite_weaker_than_a_member_is_flagged(tiny_run, tmp_path):
    _, records = tiny_run
    pgd = _pgd3(records)
    worst = crafted(pgd, suffix="-worst", attack="worst:fgsm,pgd-3", steps=None,
                    adversarial={"pixel_auroc": min(100.0, pgd.adversarial.pixel_auroc + 10)})
    beta = _pgd3(records, "beta")
    sound = crafted(beta, suffix="-worst", attack="worst:fgsm,pgd-3", steps=None,
                    adversarial={"pixel_auroc": min(r.adversarial.pixel_auroc for r in records if r.category == "beta")})
    results = write_records(tmp_path / "results", [crafted(r, suffix="", profile="paper")
                                                   for r in records + [worst, sound]])
    site = report(results, tmp_path / "site")
    assert flag_kinds(site) == {"composite"}
    assert "weaker than its member pgd" in (site / "index.html").read_text()


def test_an_inverted_map_and_a_missing_category_are_flagged(tiny_run, tmp_path):
    _, records = tiny_run
    paper = [crafted(r, suffix="", profile="paper") for r in records]
    inverted = [crafted(r, suffix="", clean={"image_auroc": 30.0}) if r.category == "beta" else r for r in paper]
    site = report(write_records(tmp_path / "inverted", inverted), tmp_path / "site")
    assert flag_kinds(site) == {"inverted"}
    kept = [r for r in paper if not (r.category == "beta" and r.attack == "fgsm")]
    site = report(write_records(tmp_path / "missing", kept), tmp_path / "site2")
    assert flag_kinds(site) == {"missing"}
    index = (site / "index.html").read_text()
    assert "mean over 1 of 2 categories, without beta" in index
    assert re.search(r'<a class="value" [^>]*>[0-9.]+\*</a>', index)  # the incomplete mean is starred
    # a category of the dataset's tree without any record is missing too (the mean is not the dataset's)
    site = report(write_records(tmp_path / "alpha-only", [r for r in paper if r.category == "alpha"]), tmp_path / "s3")
    assert flag_kinds(site) == {"missing"}
    assert "mean over 1 of 2 categories, without beta" in (site / "index.html").read_text()


def test_leaderboard_ranks_by_worst_adversarial_auroc(tiny_run, tmp_path):
    _, records = tiny_run
    robust = [crafted(r, suffix="-robust", method="robust-one", adversarial={"image_auroc": 90.0}) for r in records]
    site = report(write_records(tmp_path / "results", records + robust), tmp_path / "site")
    rows = Page((site / "index.html").read_text()).rows
    ad = [r["data-method"] for r in rows][:2]
    assert ad == ["robust-one", TINY]


def test_everything_is_escaped(tiny_run, tmp_path):
    _, records = tiny_run
    evil = [crafted(r, suffix="-evil", method="<script>alert(1)</script>") for r in records]
    site = report(write_records(tmp_path / "results", evil), tmp_path / "site")
    for path, page in pages(site).items():
        assert page.scripts == 0, path
        assert "<script>alert" not in path.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (site / "index.html").read_text()


def test_reference_figures_stand_beside_the_measured_ones(tiny_run, tmp_path):
    results, _ = tiny_run
    csv = tmp_path / "mine.csv"
    csv.write_text("table,method,dataset,category,task,attack,clean,adversarial,norm,eps\n"
                   f"T9,{TINY},mvtec,mean,AL,pgd-3,97.5,61.25,linf,8/255\n"
                   f"T9,{TINY},mvtec,alpha,AL,pgd-3,96.5,58.75,linf,8/255\n"
                   f"T9,{TINY},mvtec,alpha,AD,pgd-3,91.5,33.75,linf,8/255\n")
    site = report(results, tmp_path / "site", reference=str(csv))
    index = (site / "index.html").read_text()
    assert "ref 61.2" in index  # PGD-3, AL
    assert "ref 97.5" in index  # the clean figure
    assert index.count('class="paper"') == 2
    # a category's page shows that category's figures; the tiny run attacked the localization
    # objective only, so the AD figure of an attack (the detection objective's) stands nowhere
    alpha = next((site / "categories").glob("mvtec__alpha-*.html")).read_text()
    assert "ref 58.8" in alpha and "ref 96.5" in alpha and "ref 91.5" in alpha
    assert "ref 33.8" not in alpha
    paper = (report(results, tmp_path / "site-paper", reference="paper") / "index.html").read_text()
    assert 'class="paper"' not in paper  # the paper has no figure of the tiny detector
    with pytest.raises(ValueError, match="nothing.csv"):
        report(results, tmp_path / "site2", reference=str(tmp_path / "nothing.csv"))


def test_an_empty_results_folder_is_an_error_naming_it(tmp_path, capsys):
    assert main(["report", "--results", str(tmp_path), "--out", str(tmp_path / "site")]) == 2
    assert f"--results {tmp_path}: no result records" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# A real browser


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = ("headless Chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it "
              "where missing)")
    if os.environ.get("ROBUSTAD_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ROBUSTAD_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def run_chromium(*args, timeout=90) -> subprocess.CompletedProcess:
    flags = ["--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--hide-scrollbars",
             "--user-data-dir=" + str(Path(os.environ.get("TMPDIR", "/tmp")) / f"robustad-chromium-{os.getpid()}")]
    return subprocess.run([chromium(), *flags, *args], capture_output=True, text=True, timeout=timeout)


def test_report_loads_in_headless_chromium(tiny_run, tmp_path):
    _, records = tiny_run
    bad = crafted(_pgd3(records), suffix="-inverted", clean={"pixel_auroc": 20.0})
    site = report(write_records(tmp_path / "results", records + [bad]), tmp_path / "site")
    url = (site / "index.html").as_uri()
    dom = run_chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = Page(dom.stdout)  # the DOM as the browser built it from file://
    assert [r["data-method"] for r in page.rows] == [TINY] * 2
    assert "inverted" in page.flags and "profile" in page.flags
    assert 'data-task="al"' in dom.stdout and "Flags" in dom.stdout
    shot = tmp_path / "report.png"
    done = run_chromium("--window-size=1280,900", f"--screenshot={shot}", url)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
