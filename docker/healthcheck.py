"""Container health check: exit 0 when the service on $PORT answers /ready with 200, else 1 (stdlib only)."""

import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/ready"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as err:  # any failure means "not healthy"; say why in `docker inspect`
    print(f"healthcheck: {url}: {err}", file=sys.stderr)
    sys.exit(1)
