"""The server's translated files (filestore.py): names that cannot escape, bounded keeping."""

from __future__ import annotations

from tinytrans.filestore import FileStore, safe_name


def test_names_cannot_leave_the_directory():
    """...and the directory goes when the store closes."""
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\Users\\me\\Résumé final.docx") == "R_sum__final.docx"
    assert safe_name("...") == "file"
    store = FileStore()
    assert store.directory is None  # nothing made until a file comes
    try:
        name = store.put("../x.srt", b"data")
        assert store.get(name) == b"data" and name.endswith(".x.srt")
        assert (store.directory / name).is_file()
        for bad in ("../" + name, name + "/..", "0" * 32 + ".x.srt", "passwd", ""):
            assert store.get(bad) is None
    finally:
        store.close()
    assert not store.directory.exists()


def test_files_are_kept_for_a_while_and_within_bounds():
    now = [0.0]
    store = FileStore(keep_seconds=10, max_files=2, max_bytes=10, clock=lambda: now[0])
    try:
        a = store.put("a.txt", b"aaa")
        b = store.put("b.txt", b"bbb")
        c = store.put("c.txt", b"ccc")  # a third: the oldest goes
        assert store.get(a) is None and store.get(b) == b"bbb" and store.get(c) == b"ccc"
        d = store.put("d.txt", b"dddddddd")  # over 10 bytes together: the oldest go
        assert store.get(b) is None and store.get(c) is None and store.get(d) == b"dddddddd"
        now[0] = 11.0
        assert store.get(d) is None and not (store.directory / d).exists()
    finally:
        store.close()
