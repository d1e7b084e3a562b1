"""What a command may hold: the process's limits and its cgroup's room."""

from __future__ import annotations


def test_the_budget_follows_the_process_limits(monkeypatch):
    """Half the physical memory, unless an address-space limit (less what the process maps) or a cgroup's room is
    smaller: under ``ulimit -v`` a decode the machine could hold crashed with MemoryError instead of a refusal."""
    import resource

    from latentmotion import _memory

    monkeypatch.setattr(_memory, "cgroup_room", lambda: None)  # this runner's own limits must not decide
    real = resource.getrlimit
    monkeypatch.setattr(resource, "getrlimit", lambda r: (resource.RLIM_INFINITY,) * 2 if r in (resource.RLIMIT_AS, resource.RLIMIT_DATA) else real(r))
    free = _memory.memory_budget()
    mapped = _memory.proc_status_bytes("VmSize")
    assert mapped > 0 and _memory.proc_status_bytes("NoSuchField") == 0
    unlimited = resource.getrlimit
    monkeypatch.setattr(resource, "getrlimit", lambda r: (mapped + (1 << 30), resource.RLIM_INFINITY) if r == resource.RLIMIT_AS else unlimited(r))
    assert (1 << 30) - (64 << 20) <= _memory.memory_budget() <= 1 << 30  # what is left under the limit
    monkeypatch.setattr(resource, "getrlimit", unlimited)
    monkeypatch.setattr(_memory, "cgroup_room", lambda: 12345)
    assert _memory.memory_budget() == min(free, 12345)
    monkeypatch.setattr(_memory, "cgroup_room", lambda: -5)  # a group already over its limit: nothing
    assert _memory.memory_budget() == 0


def test_the_cgroup_room_is_the_least_over_the_group_and_its_parents(tmp_path, monkeypatch):
    """cgroup v2: each limited group's memory.max less its use without reclaimable page cache; the tightest wins."""
    from latentmotion import _memory

    root = tmp_path / "fs"
    for rel, limit, current, inactive in (("a", "1000000", 900000, 850000), ("a/b", "max", 10, 0), ("a/b/c", "500000", 300000, 0)):
        (root / rel).mkdir(parents=True)
        (root / rel / "memory.max").write_text(limit + "\n")
        (root / rel / "memory.current").write_text(f"{current}\n")
        (root / rel / "memory.stat").write_text(f"anon 5\ninactive_file {inactive}\nactive_file 3\n")
    (tmp_path / "cgroup").write_text("0::/a/b/c\n")
    assert _memory.cgroup_room(tmp_path / "cgroup", root) == min(1000000 - (900000 - 850000), 500000 - 300000)
    (tmp_path / "cgroup").write_text("12:memory:/x\n")  # cgroup v1 only: no unified line
    assert _memory.cgroup_room(tmp_path / "cgroup", root) is None
