"""Routing for both servers: a table of path patterns -> {method: route name}.
"""



class Routes:
    """A server's routing table: path patterns -> {method: route name}, as both servers use it.

    A pattern is a path (``/status``), a path and one more non-empty part (``/peers/*``: the
    part is the route's argument), or a prefix and whatever follows it, slashes and all
    (``/files/**``: what follows is the argument, maybe empty). ``JSONRequestHandler.dispatch``
    calls the handler's ``route_<name>`` for a request.
    """

    def __init__(self, table):
        self._exact, self._one, self._rest = {}, {}, []
        for pattern, methods in table.items():
            if pattern.endswith("/**"):
                self._rest.append((pattern[:-2], methods))
            elif pattern.endswith("/*"):
                self._one[pattern[:-1]] = methods
            else:
                self._exact[pattern] = methods

    def find(self, path):
        """``path`` -> ({method: route name}, [argument] or []), or (None, []) for no route."""
        methods = self._exact.get(path)
        if methods is not None:
            return methods, []
        head, _, last = path.rpartition("/")
        methods = self._one.get(head + "/")
        if methods is not None and last:
            return methods, [last]
        for prefix, methods in self._rest:
            if path.startswith(prefix):
                return methods, [path[len(prefix):]]
        return None, []
