"""A wasi:cli/command guest calling wasi:filesystem directly (no libc in between).

Usage: ``guest MODE PREOPEN``, where PREOPEN is the guest path of a preopened
directory. Every step prints one ``key=value`` line: the result, or
``ERR:<error-code>`` (the WIT name) when the call returned an error. Only
facts that are the same on every host are printed (no timestamps, inode
hashes or descriptor numbers), so the output of wasmtime and of fabric can be
compared line by line.

Modes:
  preopens          list the preopened directories
  rw DIR            files, directories, symlinks, streams, metadata in a writable preopen
  links DIR         link-at, rename-at, is-same-object (the calls taking two descriptors)
  ro DIR            reads in a read-only preopen (expects the host's hello.txt and sub/)
  ro-links DIR      rename-at and link-at in a read-only preopen
  escape DIR        paths that try to leave DIR (expects the host's links, see the tests)
"""

import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import preopens, streams
from wit_world.imports import types as fs

NONE = fs.PathFlags(0)
FOLLOW = fs.PathFlags.SYMLINK_FOLLOW
NO_OPEN = fs.OpenFlags(0)
READ = fs.DescriptorFlags.READ
RW = fs.DescriptorFlags.READ | fs.DescriptorFlags.WRITE


def out(key, value):
    sys.stdout.write(f"{key}={value}\n")
    sys.stdout.flush()


def wit(name):
    return name.lower().replace("_", "-")


def step(key, fn, show=lambda r: r):
    """Run ``fn`` and print what it gave; return the result (None on error)."""
    try:
        result = fn()
    except Err as e:
        value = e.value
        if isinstance(value, fs.ErrorCode):
            out(key, f"ERR:{wit(value.name)}")
        elif isinstance(value, streams.StreamError_Closed):
            out(key, "ERR:closed")
        elif isinstance(value, streams.StreamError_LastOperationFailed):
            code = fs.filesystem_error_code(value.value)
            out(key, f"ERR:stream:{wit(code.name) if code is not None else 'none'}")
        else:
            out(key, f"ERR:{value!r}")
        return None
    out(key, show(result))
    return result


def find(name):
    for desc, path in preopens.get_directories():
        if path == name:
            return desc
    out("error", f"no preopen {name!r}")
    sys.exit(2)


def kind(t):
    return wit(t.name)


def stat_facts(s):
    return f"{kind(s.type)}:{s.size}:{s.link_count}"


def entries(d):
    stream = d.read_directory()
    names = []
    while True:
        entry = stream.read_directory_entry()
        if entry is None:
            break
        names.append(f"{entry.name}:{kind(entry.type)}")
    return ",".join(sorted(names))


def flags(f):
    return ",".join(sorted(wit(x.name) for x in fs.DescriptorFlags if x in f))


def read_stream(s):
    chunks = []
    while True:
        try:
            chunks.append(s.blocking_read(4096))
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                return b"".join(chunks)
            raise


def mode_preopens(args):
    dirs = preopens.get_directories()
    out("count", len(dirs))
    for i, (desc, path) in enumerate(dirs):
        out(f"preopen{i}", f"{path}:{kind(desc.get_type())}:{flags(desc.get_flags())}")


def mode_rw(args):
    d = find(args[0])
    out("dir_type", kind(d.get_type()))
    out("dir_flags", flags(d.get_flags()))
    host = step("host_file", lambda: d.open_at(NONE, "input.txt", NO_OPEN, RW), lambda r: "ok")
    step("host_file_read", lambda: read_stream(host.read_via_stream(0)).decode().strip())
    step("host_file_append", lambda: host.append_via_stream().blocking_write_and_flush(b"appended by the guest\n"))
    f = step("create", lambda: d.open_at(NONE, "a.txt", fs.OpenFlags.CREATE, RW), lambda r: "ok")
    step("write", lambda: f.write(b"hello world", 0))
    step("read", lambda: f.read(100, 0), lambda r: f"{r[0].decode()}:{r[1]}")
    step("read_at_end", lambda: f.read(100, 11), lambda r: f"{r[0]!r}:{r[1]}")
    step("read_middle", lambda: f.read(5, 6), lambda r: f"{r[0].decode()}:{r[1]}")
    step("pwrite_gap", lambda: f.write(b"!", 20))
    step("stat", lambda: f.stat(), stat_facts)
    step("get_type", lambda: kind(f.get_type()))
    step("file_flags", lambda: flags(f.get_flags()))
    step("set_size", lambda: f.set_size(5))
    step("size_after_set_size", lambda: f.stat().size)
    step("advise", lambda: f.advise(0, 0, fs.Advice.SEQUENTIAL))
    step("sync_data", lambda: f.sync_data())
    step("sync", lambda: f.sync())
    step("dir_sync", lambda: d.sync())
    when = fs.NewTimestamp_Timestamp(fs.wall_clock.Datetime(seconds=1_000_000, nanoseconds=500))
    step("set_times", lambda: f.set_times(when, fs.NewTimestamp_NoChange()))
    step("atime", lambda: f.stat().data_access_timestamp, lambda t: f"{t.seconds}.{t.nanoseconds}")
    step("set_times_at", lambda: d.set_times_at(NONE, "a.txt", fs.NewTimestamp_NoChange(), when))
    step("mtime", lambda: f.stat().data_modification_timestamp, lambda t: f"{t.seconds}")

    # Streams: write, append, read back.
    w = step("write_stream", lambda: f.write_via_stream(5), lambda r: "ok")
    step("stream_write", lambda: w.blocking_write_and_flush(b" there"))
    a = step("append_stream", lambda: f.append_via_stream(), lambda r: "ok")
    step("stream_append", lambda: a.blocking_write_and_flush(b"!"))
    r = step("read_stream", lambda: f.read_via_stream(0), lambda r: "ok")
    step("stream_read", lambda: read_stream(r).decode())
    step("stream_read_after_eof", lambda: r.read(10))
    big = bytes(range(256)) * 1024
    b = step("create_big", lambda: d.open_at(NONE, "big.bin", fs.OpenFlags.CREATE, RW), lambda r: "ok")
    bw = b.write_via_stream(0)
    step("big_check_write", lambda: bw.check_write() >= 4096)
    off = 0
    while off < len(big):
        n = min(bw.check_write(), 65536, len(big) - off)
        if n == 0:
            bw.subscribe().block()
            continue
        bw.write(big[off : off + n])
        off += n
    step("big_flush", lambda: bw.blocking_flush())
    step("big_size", lambda: b.stat().size)
    step("big_read_ok", lambda: read_stream(b.read_via_stream(0)) == big)
    step("big_read_capped", lambda: len(b.read(1 << 20, 0)[0]) <= 65536)

    # Errors a stream reports: a file opened read-only cannot be written.
    ro = d.open_at(NONE, "a.txt", NO_OPEN, READ)
    step("ro_open_flags", lambda: flags(ro.get_flags()))
    step("ro_write", lambda: ro.write(b"x", 0))
    ws = ro.write_via_stream(0)
    step("ro_stream_write", lambda: ws.blocking_write_and_flush(b"x"))

    # Directories.
    step("mkdir", lambda: d.create_directory_at("sub"))
    step("mkdir_again", lambda: d.create_directory_at("sub"))
    step("mkdir_nested", lambda: d.create_directory_at("sub/inner/"))
    step("mkdir_missing_parent", lambda: d.create_directory_at("nope/inner"))
    sub = step("open_dir", lambda: d.open_at(NONE, "sub", fs.OpenFlags.DIRECTORY, READ), lambda r: "ok")
    step("sub_type", lambda: kind(sub.get_type()))
    step("sub_flags", lambda: flags(sub.get_flags()))
    step("sub_create", lambda: sub.open_at(NONE, "s.txt", fs.OpenFlags.CREATE, RW).write(b"s", 0))
    step("open_dir_write", lambda: d.open_at(NONE, "sub", NO_OPEN, RW))
    step("open_file_as_dir", lambda: d.open_at(NONE, "a.txt", fs.OpenFlags.DIRECTORY, READ))
    step("open_dir_create", lambda: d.open_at(NONE, "x", fs.OpenFlags.DIRECTORY | fs.OpenFlags.CREATE, READ))
    step("open_missing", lambda: d.open_at(NONE, "missing.txt", NO_OPEN, READ))
    step("open_trailing_slash_file", lambda: d.open_at(NONE, "a.txt/", NO_OPEN, READ))
    step("open_trailing_slash_dir", lambda: d.open_at(NONE, "sub/", NO_OPEN, READ), lambda r: "ok")
    step("open_dot", lambda: d.open_at(NONE, ".", NO_OPEN, READ), lambda r: kind(r.get_type()))
    step("open_dotdot_inside", lambda: d.open_at(NONE, "sub/../a.txt", NO_OPEN, READ).read(5, 0)[0].decode())
    step("create_exclusive", lambda: d.open_at(NONE, "a.txt", fs.OpenFlags.CREATE | fs.OpenFlags.EXCLUSIVE, RW))
    step("truncate", lambda: d.open_at(NONE, "a.txt", fs.OpenFlags.TRUNCATE, RW).stat().size)
    step("sync_flag", lambda: d.open_at(NONE, "a.txt", NO_OPEN, READ | fs.DescriptorFlags.FILE_INTEGRITY_SYNC))
    step("readdir", lambda: entries(d))
    step("readdir_sub", lambda: entries(sub))
    step("readdir_file", lambda: f.read_directory())
    step("dir_read", lambda: d.read(1, 0))
    step("dir_write", lambda: d.write(b"x", 0))
    step("dir_read_stream", lambda: d.read_via_stream(0))
    step("dir_write_stream", lambda: d.write_via_stream(0))
    step("dir_set_size", lambda: d.set_size(0))
    step("dir_advise", lambda: d.advise(0, 0, fs.Advice.NORMAL))
    step("file_open_at", lambda: f.open_at(NONE, "x", NO_OPEN, READ))
    step("file_stat_at", lambda: f.stat_at(NONE, "x"))
    step("stat_at", lambda: d.stat_at(NONE, "sub"), stat_facts)
    step("stat_at_missing", lambda: d.stat_at(NONE, "missing"))
    step("stat_at_empty", lambda: d.stat_at(NONE, ""))
    step("stat_at_nul", lambda: d.stat_at(NONE, "a.txt\0"))

    # Links.
    step("symlink", lambda: d.symlink_at("a.txt", "link"))
    step("symlink_exists", lambda: d.symlink_at("a.txt", "link"))
    step("symlink_absolute", lambda: d.symlink_at("/etc/passwd", "abs"))
    step("readlink", lambda: d.readlink_at("link"))
    step("readlink_file", lambda: d.readlink_at("a.txt"))
    step("stat_link_nofollow", lambda: kind(d.stat_at(NONE, "link").type))
    step("stat_link_follow", lambda: kind(d.stat_at(FOLLOW, "link").type))
    step("open_link_nofollow", lambda: d.open_at(NONE, "link", NO_OPEN, READ))
    step("open_link_follow", lambda: d.open_at(FOLLOW, "link", NO_OPEN, READ).read(5, 0)[0].decode())
    step("symlink_dir", lambda: d.symlink_at("sub", "sublink"))
    step("through_dir_link", lambda: d.stat_at(NONE, "sublink/s.txt").size)
    step("symlink_loop", lambda: d.symlink_at("loop", "loop"))
    step("open_loop", lambda: d.open_at(FOLLOW, "loop", NO_OPEN, READ))
    step("readdir_with_links", lambda: entries(d))
    step("hash_same", lambda: f.metadata_hash() == d.metadata_hash_at(NONE, "a.txt"))
    step("hash_differs", lambda: f.metadata_hash() != d.metadata_hash())
    step("hash_link_follow", lambda: d.metadata_hash_at(FOLLOW, "link") == f.metadata_hash())
    step("hash_link_nofollow", lambda: d.metadata_hash_at(NONE, "link") == f.metadata_hash())
    step("hash_missing", lambda: d.metadata_hash_at(NONE, "missing"))

    # Remove.
    step("unlink_dir", lambda: d.unlink_file_at("sub"))
    step("unlink_file_slash", lambda: d.unlink_file_at("a.txt/"))
    step("rmdir_nonempty", lambda: d.remove_directory_at("sub"))
    step("rmdir_file", lambda: d.remove_directory_at("a.txt"))
    step("rmdir_dot", lambda: d.remove_directory_at("."))
    step("unlink_missing", lambda: d.unlink_file_at("missing"))
    for name in ("link", "sublink", "loop", "big.bin", "sub/s.txt"):
        step(f"unlink:{name}", lambda name=name: d.unlink_file_at(name))
    step("rmdir_inner", lambda: d.remove_directory_at("sub/inner/"))
    step("rmdir", lambda: d.remove_directory_at("sub"))

    # Leave a file and a directory behind for the host to check.
    kept = d.open_at(NONE, "kept.txt", fs.OpenFlags.CREATE | fs.OpenFlags.EXCLUSIVE, RW)
    step("kept_write", lambda: kept.write_via_stream(0).blocking_write_and_flush(b"written by the guest\n"))
    step("kept_dir", lambda: d.create_directory_at("kept-dir"))
    nested = d.open_at(NONE, "kept-dir/nested.bin", fs.OpenFlags.CREATE, RW)
    step("kept_nested", lambda: nested.write(bytes(range(256)), 0))
    step("final_readdir", lambda: entries(d))


def mode_links(args):
    """The calls that take two descriptors: link-at, rename-at, is-same-object."""
    d = find(args[0])
    f = d.open_at(NONE, "a.txt", fs.OpenFlags.CREATE, RW)
    f.write(b"linked", 0)
    d.create_directory_at("sub")
    sub = d.open_at(NONE, "sub", fs.OpenFlags.DIRECTORY, READ)
    d.symlink_at("a.txt", "link")
    step("same_self", lambda: d.is_same_object(d))
    step("same_dir_other_handle", lambda: d.is_same_object(d.open_at(NONE, ".", NO_OPEN, READ)))
    step("same_other", lambda: d.is_same_object(sub))
    step("hardlink", lambda: d.link_at(NONE, "a.txt", sub, "hard.txt"))
    step("hardlink_count", lambda: d.stat_at(NONE, "a.txt").link_count)
    step("hardlink_content", lambda: sub.open_at(NONE, "hard.txt", NO_OPEN, READ).read(10, 0)[0].decode())
    step("hardlink_same_object", lambda: f.is_same_object(sub.open_at(NONE, "hard.txt", NO_OPEN, READ)))
    step("hardlink_same_hash", lambda: f.metadata_hash() == sub.metadata_hash_at(NONE, "hard.txt"))
    step("hardlink_exists", lambda: d.link_at(NONE, "a.txt", sub, "hard.txt"))
    step("hardlink_follow", lambda: d.link_at(FOLLOW, "link", d, "x"))
    step("hardlink_missing", lambda: d.link_at(NONE, "missing", d, "x"))
    step("hardlink_to_file_desc", lambda: d.link_at(NONE, "a.txt", f, "x"))
    step("hardlink_escape", lambda: d.link_at(NONE, "a.txt", sub, "../../x"))
    step("rename", lambda: d.rename_at("a.txt", sub, "b.txt"))
    step("rename_missing", lambda: d.rename_at("a.txt", sub, "c.txt"))
    step("rename_escape", lambda: sub.rename_at("b.txt", d, "../b.txt"))
    step("rename_dir_trailing", lambda: d.rename_at("sub/", d, "sub2/"))
    step("rename_over_nonempty", lambda: d.create_directory_at("full") or d.rename_at("empty_missing", d, "full"))
    step("readdir", lambda: entries(d))
    step("readdir_sub2", lambda: entries(d.open_at(NONE, "sub2", fs.OpenFlags.DIRECTORY, READ)))
    for name in ("link", "sub2/b.txt", "sub2/hard.txt"):
        step(f"unlink:{name}", lambda name=name: d.unlink_file_at(name))
    for name in ("sub2", "full"):
        step(f"rmdir:{name}", lambda name=name: d.remove_directory_at(name))
    step("final_readdir", lambda: entries(d))


def mode_ro(args):
    d = find(args[0])
    out("dir_flags", flags(d.get_flags()))
    f = step("open_read", lambda: d.open_at(NONE, "hello.txt", NO_OPEN, READ), lambda r: "ok")
    step("read", lambda: f.read(100, 0)[0].decode().strip())
    step("stream_read", lambda: read_stream(f.read_via_stream(0)).decode().strip())
    step("stat", lambda: f.stat(), stat_facts)
    step("readdir", lambda: entries(d))
    step("stat_at", lambda: d.stat_at(NONE, "sub"), stat_facts)
    step("open_write", lambda: d.open_at(NONE, "hello.txt", NO_OPEN, RW))
    step("open_create", lambda: d.open_at(NONE, "new.txt", fs.OpenFlags.CREATE, RW))
    step("open_truncate", lambda: d.open_at(NONE, "hello.txt", fs.OpenFlags.TRUNCATE, READ))
    step("write", lambda: f.write(b"x", 0))
    step("write_stream", lambda: f.write_via_stream(0))
    step("append_stream", lambda: f.append_via_stream())
    step("set_size", lambda: f.set_size(0))
    step("set_times", lambda: f.set_times(fs.NewTimestamp_Now(), fs.NewTimestamp_Now()))
    step("mkdir", lambda: d.create_directory_at("newdir"))
    step("unlink", lambda: d.unlink_file_at("hello.txt"))
    step("rmdir", lambda: d.remove_directory_at("sub"))
    step("symlink", lambda: d.symlink_at("hello.txt", "link"))
    step("set_times_at", lambda: d.set_times_at(NONE, "hello.txt", fs.NewTimestamp_Now(), fs.NewTimestamp_Now()))
    sub = step("open_sub", lambda: d.open_at(NONE, "sub", fs.OpenFlags.DIRECTORY, READ), lambda r: "ok")
    step("sub_flags", lambda: flags(sub.get_flags()))
    step("sub_create", lambda: sub.open_at(NONE, "x.txt", fs.OpenFlags.CREATE, RW))
    step("sub_mkdir", lambda: sub.create_directory_at("x"))
    step("final_readdir", lambda: entries(d))


def mode_ro_links(args):
    """rename-at and link-at under a read-only preopen (two descriptors each)."""
    d = find(args[0])
    step("rename", lambda: d.rename_at("hello.txt", d, "moved.txt"))
    step("link", lambda: d.link_at(NONE, "hello.txt", d, "hard"))
    step("final_readdir", lambda: entries(d))


def mode_escape(args):
    d = find(args[0])
    probes = [
        ("dotdot", "../outside.txt"),
        ("dotdot_deep", "inner/../../outside.txt"),
        ("absolute", "/etc/passwd"),
        ("dot_then_dotdot", "./.."),
        ("abs_link", "abs-link"),
        ("rel_link", "rel-link"),
        ("dir_link_inner", "dir-link/secret.txt"),
        ("chain_link", "chain-link"),
        ("loop_link", "loop-link"),
        ("inside_link", "inside-link"),
        ("inside_via_dotdot", "inner/../inside.txt"),
    ]
    for key, path in probes:
        step(f"open:{key}", lambda p=path: d.open_at(FOLLOW, p, NO_OPEN, READ).read(100, 0)[0].decode().strip())
        step(f"stat:{key}", lambda p=path: kind(d.stat_at(FOLLOW, p).type))
    step("stat_nofollow:abs_link", lambda: kind(d.stat_at(NONE, "abs-link").type))
    step("readlink:abs_link", lambda: d.readlink_at("abs-link"))
    step("readlink:rel_link", lambda: d.readlink_at("rel-link"))
    step("mkdir:dotdot", lambda: d.create_directory_at("../escaped-dir"))
    step("create:dotdot", lambda: d.open_at(NONE, "../escaped.txt", fs.OpenFlags.CREATE, RW))
    step("create:dir_link", lambda: d.open_at(NONE, "dir-link/escaped.txt", fs.OpenFlags.CREATE, RW))
    step("symlink:absolute", lambda: d.symlink_at("/etc", "etc-link"))
    step("unlink:out", lambda: d.unlink_file_at("../outside.txt"))
    step("unlink:dir_link", lambda: d.unlink_file_at("dir-link/secret.txt"))
    inner = d.open_at(NONE, "inner", fs.OpenFlags.DIRECTORY, READ)
    step("sub_dotdot", lambda: inner.stat_at(NONE, ".."))
    step("sub_dotdot_file", lambda: inner.open_at(NONE, "../inside.txt", NO_OPEN, READ))
    step("sub_dot", lambda: kind(inner.stat_at(NONE, ".").type))


MODES = {
    "preopens": mode_preopens,
    "rw": mode_rw,
    "links": mode_links,
    "ro": mode_ro,
    "ro-links": mode_ro_links,
    "escape": mode_escape,
}


class Run(exports.Run):
    def run(self) -> None:
        argv = sys.argv[1:]
        mode = argv[0] if argv else "preopens"
        handler = MODES.get(mode)
        if handler is None:
            out("error", f"unknown mode {mode!r}")
            sys.exit(2)
        handler(argv[1:])
        out("done", 1)

