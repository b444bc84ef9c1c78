"""Parents that know their children without keeping them alive (a Machine its VMs, a VM
its vCPUs): a dropped child is garbage-collected and frees what it holds, while the child
keeps its parent alive through an ordinary reference."""
import threading
import weakref


class WeakList:
    """An ordered list of weak references; iterating gives the children still alive."""

    def __init__(self):
        self._refs = []
        self._lock = threading.Lock()

    def add(self, obj):
        with self._lock:
            self._refs = [r for r in self._refs if r() is not None]
            self._refs.append(weakref.ref(obj))

    def discard(self, obj):
        with self._lock:
            self._refs = [r for r in self._refs if r() is not None and r() is not obj]

    def alive(self):
        with self._lock:
            return [o for o in (r() for r in self._refs) if o is not None]

    def __iter__(self):
        return iter(self.alive())

    def __len__(self):
        return len(self.alive())

    def __contains__(self, obj):
        return any(o is obj for o in self.alive())

    def __getitem__(self, i):
        return self.alive()[i]

    def __repr__(self):
        return repr(self.alive())
