"""Container health probe: exit 0 if GET http://127.0.0.1:$PORT<path> answers 2xx.

The images have no curl or wget (less to patch, less to attack), and Python is already
there. Usage: python healthcheck.py /healthz   (liveness)   or   /readyz   (readiness).
"""

import os
import sys
import urllib.error
import urllib.request

path = sys.argv[1] if len(sys.argv) > 1 else "/healthz"
url = f"http://127.0.0.1:{os.environ.get('PORT', '5000')}{path}"
try:
    with urllib.request.urlopen(url, timeout=2) as response:
        sys.exit(0 if 200 <= response.status < 300 else 1)
except (OSError, urllib.error.URLError) as error:
    print(f"healthcheck {url}: {error}", file=sys.stderr)
    sys.exit(1)
