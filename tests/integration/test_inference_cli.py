"""`dist-lstm translate | evaluate | average` on a checkpoint trained by the smoke experiment."""

import gzip
import io
import json
import os
import re
import subprocess
import sys

import pytest
import sacrebleu
import torch

from dist_lstm import cli
from dist_lstm.batch import PAD_ID
from dist_lstm.checkpoint import load_checkpoint
from dist_lstm.data.corpus import read_lines
from dist_lstm.errors import ConfigError
from dist_lstm.translate.inference import (
    MAX_BEAM,
    SearchOptions,
    Translator,
    load_model,
    load_models,
)
from tests.helpers.corpus import write_lines
from tests.helpers.hardware import needs_bf16
from tests.helpers.paths import ROOT

SENTENCES = [
    "Ein Mann fährt Fahrrad.",
    "",
    "Zwei Hunde spielen im Schnee.",
    "Eine Frau in einem roten Kleid steht vor einem Gebäude.",
]


@pytest.fixture(scope="module")
def run_dir(smoke_run):
    return smoke_run


def call(args, capsys):
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class FakeStdin:
    def __init__(self, data: bytes):
        self.buffer = io.BytesIO(data)
        self.buffer.isatty = lambda: False


def test_translate_keeps_line_count_order_and_empty_lines(run_dir, tmp_path, capsys):
    src = write_lines(tmp_path / "in.de", SENTENCES)
    out = tmp_path / "out.en"
    code, _, err = call(
        [
            "translate",
            "--checkpoint",
            run_dir,
            "--input",
            src,
            "--output",
            out,
            "--beam",
            3,
            "--batch-size",
            2,
        ],
        capsys,
    )
    assert code == 0, err
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == len(SENTENCES) + 1
    assert lines[1] == "" and all(lines[i] for i in (0, 2, 3))
    # Order: each line equals its translation alone.
    alone = Translator(load_model(run_dir), SearchOptions(beam=3)).translate([SENTENCES[3]])
    assert lines[3] == alone[0]


def test_translate_reads_gzip_input_and_names_a_damaged_one(run_dir, tmp_path, capsys):
    plain = write_lines(tmp_path / "in.de", SENTENCES)
    packed = tmp_path / "in.de.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    outputs = []
    for source in (plain, packed):
        code, out, err = call(["translate", "--checkpoint", run_dir, "--input", source], capsys)
        assert code == 0, err
        outputs.append(out)
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == len(SENTENCES)
    packed.write_bytes(packed.read_bytes()[:-12])  # cut inside the gzip trailer
    code, out, err = call(["translate", "--checkpoint", run_dir, "--input", packed], capsys)
    assert code == 2 and f"cannot read {packed}" in err and "Traceback" not in err


def test_translate_reads_stdin(run_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", FakeStdin("\n".join(SENTENCES).encode() + b"\n"))
    code, out, err = call(
        ["translate", "--checkpoint", run_dir / "checkpoints" / "best", "--beam", 1], capsys
    )
    assert code == 0, err
    greedy = Translator(load_model(run_dir), SearchOptions(beam=1))
    assert out.split("\n") == [*each_alone(greedy, SENTENCES), ""]


def each_alone(translator: Translator, lines) -> list:
    """Each line's translation when it is translated by itself."""
    return [translator.translate([line])[0] for line in lines]


def test_python_dash_m_translates_stdin(run_dir):
    lines = ["Ein Hund läuft.", "", "Ein Kind lacht."]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dist_lstm",
            "translate",
            "--checkpoint",
            str(run_dir),
            "--beam",
            "2",
        ],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    beam2 = Translator(load_model(run_dir), SearchOptions(beam=2))
    assert proc.stdout.split("\n") == [*each_alone(beam2, lines), ""]


def test_evaluate_json_matches_sacrebleu_on_written_hypotheses(run_dir, tmp_path, capsys):
    src = write_lines(tmp_path / "src.de", SENTENCES[2:] * 3)
    ref = write_lines(
        tmp_path / "ref.en",
        ["Two dogs play in the snow.", "A woman in a red dress stands in front of a building."] * 3,
    )
    hyp = tmp_path / "hyp.en"
    code, out, err = call(
        [
            "evaluate",
            "--checkpoint",
            run_dir,
            "--src",
            src,
            "--ref",
            ref,
            "--beam",
            2,
            "--json",
            "--output",
            hyp,
        ],
        capsys,
    )
    assert code == 0, err
    report = json.loads(out)
    assert {"bleu", "chrf", "bleu_signature", "chrf_signature"} <= report.keys()
    hyps = hyp.read_text(encoding="utf-8").splitlines()
    refs = ref.read_text(encoding="utf-8").splitlines()
    assert report["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert report["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert "tok:13a" in report["bleu_signature"]


def test_evaluate_split_test_prints_scores_with_signatures(run_dir, capsys):
    code, out, err = call(
        ["evaluate", "--checkpoint", run_dir, "--split", "test", "--beam", 1, "--batch-size", 200],
        capsys,
    )
    assert code == 0, err
    assert out.startswith("BLEU = ") and "nrefs:1" in out and "\nchrF = " in out
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    test_bleu = next(r["test_bleu"] for r in metrics if "test_bleu" in r)
    assert float(out.split()[2]) == pytest.approx(test_bleu, abs=0.01)  # same model, same search


def test_average_identical_and_different_checkpoints(run_dir, tmp_path, capsys):
    ckpts = run_dir / "checkpoints"
    a, b = ckpts / "step_00000075", ckpts / "step_00000150"
    code, _, err = call(
        ["average", "--checkpoints", b, b, "--output", tmp_path / "same.pt"], capsys
    )
    assert code == 0, err
    same, original = load_checkpoint(tmp_path / "same.pt"), load_checkpoint(b)
    for name, tensor in original["model"].items():
        torch.testing.assert_close(same["model"][name], tensor)
    code, _, err = call(
        ["average", "--run", run_dir, "--last", 2, "--output", tmp_path / "mean.pt"], capsys
    )
    assert code == 0, err
    mean, first = load_checkpoint(tmp_path / "mean.pt"), load_checkpoint(a)
    for name, tensor in original["model"].items():
        torch.testing.assert_close(mean["model"][name], (tensor + first["model"][name]) / 2)
    assert load_model(tmp_path / "mean.pt").step == 150  # usable by translate/evaluate


def test_ensemble_of_a_model_with_itself_translates_like_it(run_dir, tmp_path, capsys):
    """The mean of two equal log-probabilities is that log-probability, so two copies of
    one checkpoint search exactly like it alone, through the CLI's repeated --checkpoint."""
    src = write_lines(tmp_path / "in.de", SENTENCES)
    best = run_dir / "checkpoints" / "best"
    outputs = {}
    for name, checkpoints in (("one", [best]), ("two", [best, best])):
        repeated = [arg for path in checkpoints for arg in ("--checkpoint", path)]
        out = tmp_path / f"{name}.en"
        code, _, err = call(["translate", *repeated, "--input", src, "--output", out], capsys)
        assert code == 0, err
        outputs[name] = out.read_text(encoding="utf-8")
    assert outputs["two"] == outputs["one"] and outputs["one"].strip()


def test_evaluate_an_ensemble_of_two_checkpoints(run_dir, tmp_path, capsys):
    """The test split decoded by both models together, and scored as sacreBLEU scores
    the hypotheses it wrote."""
    ckpts = run_dir / "checkpoints"
    a, b = ckpts / "step_00000075", ckpts / "step_00000150"
    hyp = tmp_path / "hyp.en"
    args = ["evaluate", "--split", "test", "--beam", 2, "--json", "--output", hyp]
    code, out, err = call([*args, "--checkpoint", a, "--checkpoint", b], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["checkpoints"] == [str(a.resolve()), str(b.resolve())]
    ensemble = load_models([a, b])
    sources, references = (read_lines(path) for path in (report["source"], report["reference"]))
    hyps = hyp.read_text(encoding="utf-8").splitlines()
    assert report["sentences"] == len(hyps) == len(sources) == 1000
    assert hyps == Translator(ensemble, SearchOptions(beam=2)).translate(sources)
    assert report["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [references]).score)


def test_ensemble_with_another_tokenizer_is_refused(run_dir, tmp_path, capsys):
    payload = load_checkpoint(run_dir / "checkpoints" / "best")
    pieces = payload["tokenizer"]["tgt_pieces"]  # the specials first, then the pieces
    payload["tokenizer"]["tgt_pieces"] = pieces[:4] + list(reversed(pieces[4:]))
    torch.save(payload, tmp_path / "other.pt")
    best = run_dir / "checkpoints" / "best"
    code, _, err = call(
        ["translate", "--checkpoint", best, "--checkpoint", tmp_path / "other.pt"], capsys
    )
    assert code == 2 and "another tokenizer" in err and "share one" in err


def test_tune_search_reports_the_grid_and_its_best_matches_evaluate(run_dir, tmp_path, capsys):
    src = write_lines(tmp_path / "src.de", SENTENCES[2:] * 2)
    ref = write_lines(tmp_path / "ref.en", ["Two dogs play.", "A woman stands."] * 2)
    report_file = tmp_path / "grid.json"
    args = ["--checkpoint", run_dir, "--src", src, "--ref", ref]
    grid = ["--beams", 2, 1, "--alphas", 0, 1, "--output", report_file]
    code, out, err = call(["tune-search", *args, *grid], capsys)
    assert code == 0, err
    assert out.splitlines()[1].split()[-2:] == ["0.00", "1.00"] and "best: --beam" in out
    report = json.loads(report_file.read_text())
    assert [(p["beam"], p["alpha"]) for p in report["grid"]] == [(1, 0.0), (2, 0.0), (2, 1.0)]
    best = report["best"]
    assert best["bleu"] == max(p["bleu"] for p in report["grid"])
    code, out, err = call(
        ["evaluate", *args, "--beam", best["beam"], "--alpha", best["alpha"], "--json"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["bleu"] == pytest.approx(best["bleu"])


def test_tune_search_refuses_a_negative_alpha(run_dir, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["tune-search", "--checkpoint", str(run_dir), "--alphas", "0", "-0.5"])
    assert exit.value.code == 2 and "-0.5 is invalid: use 0 or more" in capsys.readouterr().err


def test_tune_search_refuses_to_choose_on_the_test_split(run_dir, capsys):
    code, out, err = call(["tune-search", "--checkpoint", run_dir, "--split", "test"], capsys)
    assert code == 2 and out == ""
    assert "--split valid" in err and "Traceback" not in err


def test_translate_alignments_and_attention_plots(run_dir, tmp_path, capsys):
    src = write_lines(tmp_path / "in.de", SENTENCES)
    plain, aligned, plots = tmp_path / "plain.en", tmp_path / "aligned.en", tmp_path / "plots"
    base = ["translate", "--checkpoint", run_dir, "--input", src, "--beam", 1]
    assert call([*base, "--output", plain], capsys)[0] == 0
    code, _, err = call(
        [*base, "--output", aligned, "--alignments", "--attention-plot", plots, "--plot-lines", 3],
        capsys,
    )
    assert code == 0, err
    translations = plain.read_text(encoding="utf-8").splitlines()
    lines = aligned.read_text(encoding="utf-8").split("\n")[:-1]
    assert [line.split("\t")[0] for line in lines] == translations  # same search, beam 1
    for source, line in zip(SENTENCES, lines):
        text, alignment = line.split("\t")
        pairs = [tuple(map(int, p.split("-"))) for p in alignment.split()]
        assert sorted(j for _, j in pairs) == list(range(len(pairs)))  # each output word once
        assert all(i < max(len(source.split()), 1) for i, _ in pairs)
    assert lines[1] == "\t"  # an empty line stays empty, with no alignment
    assert sorted(p.name for p in plots.iterdir()) == ["line_00001.png", "line_00003.png"]


# --------------------------------------------------------------------- bad input
def test_not_a_checkpoint(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    code, _, err = call(["translate", "--checkpoint", junk], capsys)
    assert code == 2 and "is not a dist-lstm checkpoint" in err
    code, _, err = call(["translate", "--checkpoint", tmp_path], capsys)
    assert code == 2 and "directory without a checkpoint" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["translate", "evaluate", "tune-search", "serve"])
def test_device_cuda_without_cuda_is_refused_naming_the_option(run_dir, capsys, command):
    """Every decoding command resolves --device through topology.resolve_device, which
    names the option as the command line spells it."""
    extra = ["--split", "valid"] if command == "evaluate" else []
    code, out, err = call([command, "--checkpoint", run_dir, "--device", "cuda", *extra], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"dist-lstm {command}: error: --device cuda is invalid" in err
    assert "use --device cpu or --device auto" in err


@pytest.mark.parametrize("missing", ["tokenizer", "config"])
def test_checkpoint_missing_tokenizer_or_config(run_dir, tmp_path, capsys, missing):
    payload = load_checkpoint(run_dir / "checkpoints" / "best")
    del payload[missing]
    torch.save(payload, tmp_path / "partial.pt")
    code, _, err = call(["translate", "--checkpoint", tmp_path / "partial.pt"], capsys)
    assert code == 2 and f"has no {'model config' if missing == 'config' else 'tokenizer'}" in err


def test_model_config_mismatch_names_parameter_and_shapes(run_dir, tmp_path, capsys):
    payload = load_checkpoint(run_dir / "checkpoints" / "best")
    payload["config"]["model"]["hidden_size"] = 64
    torch.save(payload, tmp_path / "mismatch.pt")
    code, _, err = call(["translate", "--checkpoint", tmp_path / "mismatch.pt"], capsys)
    assert code == 2 and "do not match the model built from its config" in err
    assert re.search(r"encoder\.[\w.]+: checkpoint \(\d+, \d+\) vs model \(\d+, \d+\)", err)


def test_invalid_utf8_input_names_the_line(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad.de"
    bad.write_bytes(b"Ein Hund.\nEine Katze \xff.\n")
    code, _, err = call(["translate", "--checkpoint", run_dir, "--input", bad], capsys)
    assert code == 2 and "bad.de line 2 is not valid UTF-8" in err


def test_over_long_line_is_truncated_with_one_warning(run_dir, tmp_path, capsys, caplog):
    long_line = " ".join(["Hund"] * 400)
    src = write_lines(tmp_path / "long.de", ["Ein Hund.", long_line])
    with caplog.at_level("WARNING"):
        code, out, err = call(
            ["translate", "--checkpoint", run_dir, "--input", src, "--beam", 1], capsys
        )
    assert code == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("line 2 has")
    assert len(out.split("\n")) == 3


def test_beam_below_one_is_rejected(run_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["translate", "--checkpoint", str(run_dir), "--beam", "0"])
    assert exc.value.code == 2
    assert "--beam: 0 is invalid" in capsys.readouterr().err
    with pytest.raises(Exception, match="--beam 0 is invalid"):
        Translator(load_model(run_dir), SearchOptions(beam=0))


@pytest.mark.parametrize("command", ["translate", "evaluate", "tune-search"])
def test_a_beam_wider_than_search_holds_is_refused_before_decoding(
    run_dir, tmp_path, capsys, caplog, command
):
    """--beam 100000 was killed by the kernel for memory (exit 137) after loading and
    decoding; now it is one message naming the limit, before anything is decoded."""
    caplog.set_level("INFO")  # tune-search logs each grid point it decodes
    too_wide = MAX_BEAM + 1
    src = write_lines(tmp_path / "in.de", SENTENCES[:1])
    kept = write_lines(tmp_path / "kept.en", ["earlier output"])
    args = {
        "translate": ["--beam", too_wide, "--input", src],
        "evaluate": ["--beam", too_wide, "--src", src, "--ref", src],
        "tune-search": ["--beams", 1, too_wide, "--src", src, "--ref", src],
    }[command]
    code, out, err = call([command, "--checkpoint", run_dir, *args, "--output", kept], capsys)
    assert code == 2 and "Traceback" not in err and out == ""
    assert f"--beam {too_wide} is too wide: the largest beam is {MAX_BEAM}" in err
    assert kept.read_text() == "earlier output\n"
    assert not [r for r in caplog.records if "BLEU" in r.getMessage()]  # no grid point ran


def test_max_len_a_and_b_limit_the_output_at_the_command_line(run_dir, tmp_path, capsys):
    """a x source_length + b output pieces at most: b alone with translate, a with evaluate
    (a piece is at most one word, so words are bounded too)."""
    long_line = SENTENCES[3]
    src = write_lines(tmp_path / "in.de", [long_line, SENTENCES[0]])
    loaded = load_model(run_dir)
    unlimited = Translator(loaded, SearchOptions(beam=2)).translate([long_line])[0]
    assert len(unlimited.split()) > 4  # long enough for the limits below to cut it
    out = tmp_path / "out.en"
    limit_b = ["--max-len-a", 0, "--max-len-b", 2]
    base = ["--checkpoint", run_dir, "--beam", 2]
    code, _, err = call(["translate", *base, "--input", src, "--output", out, *limit_b], capsys)
    assert code == 0, err
    lines = out.read_text(encoding="utf-8").splitlines()
    assert all(len(line.split()) <= 2 for line in lines) and len(lines) == 2
    options = SearchOptions(beam=2, max_len_a=0, max_len_b=2)
    assert lines == Translator(loaded, options).translate([long_line, SENTENCES[0]])

    limit_a = ["--max-len-a", 0.25, "--max-len-b", 1]
    code, _, err = call(
        ["evaluate", *base, "--src", src, "--ref", src, "--output", out, *limit_a], capsys
    )
    assert code == 0, err
    pieces = Translator(loaded, SearchOptions()).source_ids([long_line, SENTENCES[0]])
    bounds = [int(0.25 * len(ids)) + 1 for ids in pieces]
    words = [len(line.split()) for line in out.read_text(encoding="utf-8").splitlines()]
    assert all(count <= bound for count, bound in zip(words, bounds)) and len(words) == 2
    assert bounds[0] < len(unlimited.split())  # the limit did cut the long line


@pytest.mark.parametrize("limits", [("0", "0"), ("-1", "5")])
def test_an_output_limit_without_room_for_a_token_is_refused(run_dir, capsys, limits):
    code, out, err = call(
        ["translate", "--checkpoint", run_dir, "--max-len-a", limits[0], "--max-len-b", limits[1]],
        capsys,
    )
    assert code == 2 and "Traceback" not in err and out == ""
    assert "needs room for one token: use a >= 0 and b >= 1" in err


def test_precision_fp16_on_cpu_is_refused_with_the_fix(run_dir, capsys):
    with pytest.raises(ConfigError, match="--precision fp16 is invalid on a CPU.*--precision bf16"):
        Translator(load_model(run_dir, "cpu"), SearchOptions(precision="fp16"))
    code, _, err = call(
        ["translate", "--checkpoint", run_dir, "--device", "cpu", "--precision", "fp16"], capsys
    )
    assert code == 2 and "--precision fp16 is invalid on a CPU" in err


@needs_bf16
def test_precision_bf16_translates_with_bf16_products(run_dir, capsys):
    translator = Translator(load_model(run_dir, "cpu"), SearchOptions(beam=2, precision="bf16"))
    outputs = translator.translate(SENTENCES)
    assert len(outputs) == len(SENTENCES) and outputs[1] == ""
    if torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_reorder_linear_weight"
    ):  # search's products ran on bf16 copies of the weights (probed here, not by the model)
        assert translator.loaded.model.decoder.combine.reordered._weight.dtype == torch.bfloat16
    code, out, err = call(
        ["evaluate", "--checkpoint", run_dir, "--split", "test", "--precision", "bf16", "--json"],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["precision"] == "bf16"


@pytest.mark.parametrize("beam", [1, 3])
def test_a_sentence_padded_in_a_batch_translates_as_it_does_alone(run_dir, beam):
    """Translate pads a batch's shorter sentences with PAD_ID; the model must take those
    places for padding (the embeddings' padding index, the attention mask)."""
    loaded = load_model(run_dir)
    assert loaded.model.encoder.embedding.padding_idx == PAD_ID
    short, long = SENTENCES[0], SENTENCES[3]
    translator = Translator(loaded, SearchOptions(beam=beam, batch_size=2))
    ids = translator.source_ids([short, long])
    assert len(ids[0]) < len(ids[1])  # the short one is padded in their batch
    assert translator.translate([short, long])[0] == translator.translate([short])[0]
    padded = translator.translate_detailed([short, long])[0]
    alone = translator.translate_detailed([short])[0]
    assert padded.translation == alone.translation
    assert padded.score == pytest.approx(alone.score, abs=1e-5)  # no weight on padding
