"""book/quantization_experiments.md against the run it reports (lmkit/book/results/quant_formats.json).

The page's tables are written by ``python bench/bench_quant_formats.py --render``, never typed; its prose states
what the numbers show. These tests fail when the page and the JSON disagree: after a new run, render the page
again and reread the prose.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_quant_formats", ROOT / "bench" / "bench_quant_formats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(bench):
    return json.loads(bench.OUT.read_text())


def test_the_tables_on_the_page_are_the_rendered_run(bench, results):
    page = bench.PAGE.read_text()
    assert page.count("<!-- table ") == len(bench.render_tables(results)), "every table of the run is on the page"
    assert bench.render_page(results) == page, "run `python bench/bench_quant_formats.py --render`"


def test_render_refuses_a_table_the_run_does_not_have(bench, results, tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# x\n<!-- table speed 7t -->\nold\n<!-- end table -->\n")
    with pytest.raises(KeyError, match="speed 7t"):
        bench.render_page(results, page)


def test_the_run_has_every_row_and_setting(bench, results):
    from lmkit.quant.fast_linear import FORMATS

    assert tuple(bench.FAST) == FORMATS  # the bench names lmkit's fast paths without importing torch
    assert [r["format"] for r in results["rows"]] == bench.FORMATS
    assert [r["format"] for r in results["fast_rows"]] == bench.FAST
    assert results["meta"]["new_tokens"] == [16, 32, 128]
    for r in results["rows"] + results["fast_rows"]:
        for t in results["meta"]["threads"]:
            assert set(r["time"][f"{t}t"]) == {"16", "32", "128"}, r["format"]
    assert all("llama_cpp" in r for r in results["rows"] if r["format"] != "NF4")


def _time(row: dict, t: str, n: str = "128") -> float:
    return row["time"][t][n]["s_per_request"]


def _rate(row: dict, t: str) -> float:
    return row["time"][t]["128"]["decode_tok_s"]


def _gb_per_s(row: dict, t: str) -> float:
    return _rate(row, t) * row["read_MB"]


def test_the_size_and_quality_claims_of_the_page_hold_for_the_run(results):
    rows = {r["format"]: r for r in results["rows"]}
    fast = {r["format"]: r for r in results["fast_rows"]}
    ppl = {f: r["perplexity"] for f, r in rows.items()}
    f32 = ppl["F32"]
    files = [r["file_MB"] for r in results["rows"]]
    assert files == sorted(files, reverse=True)  # size follows bits per weight
    assert all(5.5 < rows["F32"]["file_MB"] / rows[f]["file_MB"] < 8 for f in ("Q4_K", "Q4_1", "Q4_0", "NF4"))
    # one evaluation: the book's 6.69, on both of lmkit's float32 models
    assert round(f32, 2) == round(fast["float32"]["perplexity"], 2) == 6.69
    assert abs(ppl["Q8_0"] / f32 - 1) < 0.01 and abs(ppl["Q6_K"] / f32 - 1) < 0.01
    assert abs(fast["bfloat16"]["perplexity"] / f32 - 1) < 0.001
    assert f32 < ppl["Q4_1"] < ppl["Q4_0"] < ppl["NF4"] == max(ppl.values())
    int8 = fast["int8"]
    assert int8["int8_outlier_thresholds"] == [6.0]  # the paper's threshold, in every layer
    assert int8["perplexity"] > ppl["Q8_0"] and int8["tokens"] == rows["F32"]["tokens"]
    assert int8["weights_MB"] > int8["read_MB"]  # the float embedding for the lookup, an int8 copy for the head
    # resident beyond the tensors: the heap's own overhead, and on the fast paths the kernels' prepacked copies
    assert all(120 < r["rss_MB"] - r["weights_MB"] - r.get("prepacked_MB", 0) < 220
               for r in results["rows"] + results["fast_rows"])
    assert fast["bfloat16"]["prepacked_MB"] > 0.9 * fast["bfloat16"]["read_MB"]  # a second copy of every weight
    assert fast["int8"]["prepacked_MB"] > fast["int8"]["read_MB"]  # FBGEMM's, its rows padded to its blocks
    hf = {f: r["perplexity_hf"] for f, r in rows.items() if "perplexity_hf" in r}
    assert set(hf) == set(rows)  # HF agrees on every file; NF4's double-quant groups follow the row order
    assert all(hf[f] == ppl[f] if f != "NF4" else 0 < abs(hf[f] / ppl[f] - 1) < 0.005 for f in hf), hf
    for f, r in rows.items():  # llama.cpp's whole memory-mapped file is resident, as file pages
        assert f == "NF4" or r["llama_cpp"]["rss_file_MB"] > r["file_MB"], f


def test_the_speed_claims_of_the_page_hold_for_the_run(results):
    rows = {r["format"]: r for r in results["rows"]}
    fast = {r["format"]: r for r in results["fast_rows"]}
    cpp = {f: r["llama_cpp"] for f, r in rows.items() if "llama_cpp" in r}
    timed = [*rows.values(), *fast.values(), *cpp.values()]
    for t in (f"{t}t" for t in results["meta"]["threads"]):
        assert all(_time(r, t, "16") < _time(r, t, "32") < _time(r, t) for r in timed), t
        # QuantLinear expands its blocks at every call: slower than F32, weights streamed more slowly; Q8_0 loses
        # least, the formats with nibbles and two-level scales more (Q6_K: Q8_0 + 30 Q6_K matrices), the 4-bit
        # ones far more
        for f, r in rows.items():
            assert f == "F32" or (_time(r, t) > _time(rows["F32"], t) and _gb_per_s(r, t) < _gb_per_s(rows["F32"], t))
            assert f in ("F32", "Q8_0") or _time(r, t) > (1.15 if f == "Q6_K" else 1.3) * _time(rows["Q8_0"], t), f
        # llama.cpp multiplies from the blocks: every quantized file decodes faster than F32, which streams fastest
        assert all(_rate(r, t) > _rate(cpp["F32"], t) for f, r in cpp.items() if f != "F32"), t
        assert max(timed, key=lambda r: _gb_per_s(r, t)) is cpp["F32"]
        assert max(cpp.values(), key=lambda r: _time(r, t)) is cpp["F32"]
        # bits alone do not set llama.cpp's speed: Q4_K (mostly Q5_0) reads fewer bytes than Q8_0 and takes longer;
        # Q4_0, the simplest 4-bit block, is the fastest
        assert cpp["Q4_K"]["read_MB"] < cpp["Q8_0"]["read_MB"] and _time(cpp["Q4_K"], t) > _time(cpp["Q8_0"], t)
        assert min(cpp.values(), key=lambda r: _time(r, t)) is cpp["Q4_0"]
        # int8: faster than float32 though it streams its weights more slowly; slower than Q8_0 at the same bytes
        assert _time(fast["int8"], t) < _time(fast["float32"], t)
        assert _gb_per_s(fast["int8"], t) < _gb_per_s(fast["float32"], t)
        assert abs(fast["int8"]["read_MB"] / cpp["Q8_0"]["read_MB"] - 1) < 0.1
        assert _time(cpp["Q8_0"], t) < _time(fast["int8"], t)
        # bfloat16: half the bytes, far from half the time; fast float32 about the plain F32 model's time
        assert 0.6 * _time(fast["float32"], t) < _time(fast["bfloat16"], t)
        assert _gb_per_s(fast["bfloat16"], t) < _gb_per_s(fast["float32"], t)
        assert abs(_time(fast["float32"], t) / _time(rows["F32"], t) - 1) < 0.2


def test_the_ledger_quotes_this_run(results):
    """The notes' claim "the lower the quantization bits, the faster" is answered with this run's numbers."""
    entries = yaml.safe_load((ROOT / "book" / "notes_claims.yml").read_text(encoding="utf-8"))
    answer = " ".join(next(e for e in entries if e["id"] == "004-lower-bits-faster")["answer"].split())
    rows = {r["format"]: r for r in results["rows"]}
    fast = {r["format"]: r for r in results["fast_rows"]}
    cpp = {f: _time(r["llama_cpp"], "1t") for f, r in rows.items() if "llama_cpp" in r}
    expected = [f"{cpp['F32']:.2f} s in F32", f"{cpp['Q4_0']:.2f} s in Q4_0", f"{cpp['Q4_K']:.2f} s",
                f"{cpp['Q8_0']:.2f} s", f"takes {_time(fast['int8'], '1t') / _time(fast['float32'], '1t'):.2f}×"]
    expected += [f"{f}: {_time(rows[f], '1t') / _time(rows['F32'], '1t'):.1f}×" for f in ("Q8_0", "Q4_0")]
    assert [e for e in expected if e not in answer] == []
