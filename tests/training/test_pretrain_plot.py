import json

from training.plot import main, plot_run, read_downstream


def test_plot_writes_a_png(tmp_path):
    records = [
        {"step": s, "split": "train", "mlm_loss": 5 - s / 10, "nsp_loss": 0.7, "mlm_acc": s / 100, "nsp_acc": 0.5}
        for s in range(1, 11)
    ]
    records.append({"step": 10, "split": "eval", "mlm_loss": 4.2, "nsp_loss": 0.69, "mlm_acc": 0.1, "nsp_acc": 0.6})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = plot_run(tmp_path)
    assert out == tmp_path / "curves.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "metrics.jsonl does not exist" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text("{not json\n")
    assert main([str(tmp_path)]) == 2


def test_plot_draws_downstream_gains_when_the_run_has_them(tmp_path):
    records = [{"step": s, "split": "eval", "mlm_loss": 5 - s / 10, "mlm_acc": s / 100} for s in (5, 10)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plain = plot_run(tmp_path, tmp_path / "plain.png")
    downstream = [{"step": s, "heldout_mlm_acc": s / 90, "sst2_2000_gain_points": s - 7.5} for s in (10, 5)]
    (tmp_path / "downstream.jsonl").write_text("".join(json.dumps(r) + "\n" for r in downstream))
    assert read_downstream(tmp_path / "downstream.jsonl")[0]["step"] == 5  # ordered by step
    wide = plot_run(tmp_path, tmp_path / "wide.png")
    import matplotlib.image

    # a third panel: the figure is half as wide again
    assert matplotlib.image.imread(wide).shape[1] == matplotlib.image.imread(plain).shape[1] * 3 // 2


def test_plot_refuses_a_downstream_record_without_a_step(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train", "mlm_acc": 0.1}) + "\n")
    (tmp_path / "downstream.jsonl").write_text(json.dumps({"sst2_gain_points": 1.0}) + "\n")
    assert main([str(tmp_path)]) == 2
    assert "downstream.jsonl:1 has no `step`" in capsys.readouterr().err
