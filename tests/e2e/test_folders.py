"""``peer.py get 'Photos/'``: every file under a folder, verified, its tree kept, resumable;
and the load balancer's Metalink of that folder. Real processes on loopback."""

import os

from tests.support import ProcessTestCase, http_request, write_file

FILES = {"Photos/a.jpg": b"a" * 300_000, "Photos/2024/b.jpg": b"b" * 1000,
         "Photos/2024/deep/c.txt": b"c", "Other/x.txt": b"x"}


class FolderTests(ProcessTestCase):
    def setUp(self):
        super().setUp()
        self.lb = self.start_lb("--heartbeat", "1")
        shared = self.folder("holder", "shared")
        for name, data in FILES.items():
            write_file(shared, name, data)
        self.start_peer(self.lb.port, "holder", wait_files=set(FILES))
        self.downloads = self.folder("getter", "downloads")

    def test_get_a_folder_keeps_the_tree_and_resumes(self):
        done = self.get(self.lb.port, "Photos/", self.downloads)
        self.assertEqual(0, done.returncode, done.stderr)
        for name, data in FILES.items():
            path = os.path.join(self.downloads, *name.split("/"))
            if name.startswith("Photos/"):
                with open(path, "rb") as f:
                    self.assertEqual(data, f.read())
            else:
                self.assertFalse(os.path.exists(path))
        self.assertEqual(3, done.stdout.count("SHA-256 verified"), done.stdout)
        os.unlink(os.path.join(self.downloads, "Photos", "2024", "b.jpg"))
        again = self.get(self.lb.port, "Photos/", self.downloads)
        self.assertEqual(0, again.returncode, again.stderr)
        self.assertEqual(2, again.stdout.count("Already have it"), again.stdout)
        self.assertEqual(1, again.stdout.count("SHA-256 verified"), again.stdout)

    def test_a_folder_nobody_shares_says_so(self):
        done = self.get(self.lb.port, "Nothing/", self.downloads)
        self.assertEqual(1, done.returncode)
        self.assertIn("Nobody shares a file under 'Nothing/'", done.stderr)

    def test_the_metalink_of_a_folder(self):
        response, body = http_request(self.lb.port, "GET", "/metalink/Photos/")
        self.assertEqual(200, response.status, body)
        self.assertEqual(3, body.count(b"<file "))
