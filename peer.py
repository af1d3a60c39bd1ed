"""A peer of the P2P file sharing network: ``python peer.py`` (the menu) or a subcommand.

The program lives in the ``p2p`` package (``p2p/cli/``: ``peer.py`` dispatches the
commands, ``menu.py`` is the menu); this file is its entry point, where the user asked for it.
"""

import sys

from p2p.cli.peer import main

if __name__ == "__main__":
    sys.exit(main())
