"""`bert demo`: build the default bundles if they are missing (training/demo.py), then serve them.

    bert demo                                   # http://127.0.0.1:8000 : playground at /, API at /docs
    bert demo --data-dir DIR                    # where sst2/, conll2003/, squad/ lie (or $BERTKIT_DATA)
    bert demo --no-serve --report quality.json  # build only, and write the held-out quality figures

It lives in cli/ because it stands on both sides: the build is training's, the serving the service's.
"""

from __future__ import annotations

import sys

from core.args import parse_dataclass, run_cli
from training.demo import PROG, DemoSettings, build_and_report, say


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    def run() -> int:
        s = parse_dataclass(DemoSettings, argv, PROG, description=__doc__.splitlines()[0])
        bundles = build_and_report(s)
        if not s.serve:
            return 0
        from service import cli as serve_cli

        say(f"serving {', '.join(b.name for b in bundles)} on http://{s.host}:{s.port} (playground at /, API at /docs)")
        return serve_cli.main(["--bundles", *map(str, bundles), "--host", s.host, "--port", str(s.port)])

    return run_cli(run, PROG)


if __name__ == "__main__":
    sys.exit(main())
