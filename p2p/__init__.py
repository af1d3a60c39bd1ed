"""The peer-to-peer file sharing network, as one package of layers.

Imports run one way only, from the top of this list down (``tests/unit/test_layers.py``
walks them and fails on any that runs the other way):

``cli``   the command line: argparse, the commands, the menu, the console, autostart
``net``   drivers: threads and sockets around the core's machines (the load balancer's
          server, the file server and share index, the load balancer's client, the
          downloader, discovery's beacon)
``http``  HTTP plumbing: the accepting server, its connections and workers, routing
``core``  pure: records and errors, the protocol both ways, pieces, the plan, the
          registry, membership, signing, discovery's datagrams
"""

VERSION = "1.1"  # of the program, shown by --version and in the Server header of each side
