"""The P2P load balancer: ``python load_balancer.py [--port 6969] ...``.

The program lives in the ``p2p`` package (``p2p/cli/lb_main.py`` has the command line,
``p2p/net/lb_server.py`` the server, ``p2p/core/registry.py`` its decisions); this file is
its entry point, where the user asked for it.
"""

import sys

from p2p.cli.lb_main import main

if __name__ == "__main__":
    sys.exit(main())
