"""The service from a checkout, as the deployment guide runs it:

    uvicorn main:app --host 0.0.0.0 --port 8000     # or HOST/PORT in the environment
    python main.py                                  # the same as `flowmgr --server-only`

`app` is `server.app`'s: the one service `flowmgr --server-only` builds (see server/app.py for
how HOST, PORT, SOCKET_DIR, LOG_LEVEL and CONFIG_FILE are read).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from server.__main__ import main

    sys.exit(main())

from server.app import app  # noqa: E402  (not built when run as a script)

__all__ = ["app"]
