import json

from training.plot import main, plot_run


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
