"""A guest exercising every component value kind in both directions."""

from wit_world import exports
from wit_world.imports import host, types
from componentize_py_types import Err, Ok


class Roundtrip(exports.Roundtrip):
    def echo_bool(self, x):
        return x

    def echo_s8(self, x):
        return x

    def echo_u64(self, x):
        return x

    def echo_s64(self, x):
        return x

    def echo_f64(self, x):
        return x

    def echo_char(self, x):
        return x

    def echo_string(self, x):
        return x

    def echo_bytes(self, x):
        return x

    def echo_list(self, x):
        return x

    def echo_point(self, x):
        return x

    def echo_tuple(self, x):
        return x

    def echo_shape(self, x):
        return x

    def echo_color(self, x):
        return x

    def echo_perms(self, x):
        return x

    def echo_option(self, x):
        return x

    def echo_result(self, x):
        if isinstance(x, Ok):
            return x.value
        raise Err(x.value)

    def check_host(self):
        bad = []

        def check(name, got, want):
            if got != want:
                bad.append(f"{name}: sent {want!r} got {got!r}")

        check("bool", host.echo_bool(True), True)
        check("s8", host.echo_s8(-128), -128)
        check("u16", host.echo_u16(65535), 65535)
        check("s32", host.echo_s32(-(2**31)), -(2**31))
        check("u64", host.echo_u64(2**64 - 1), 2**64 - 1)
        check("s64", host.echo_s64(-(2**63)), -(2**63))
        check("f32", host.echo_f32(1.5), 1.5)
        check("f64", host.echo_f64(-2.25), -2.25)
        check("char", host.echo_char("\U0001F600"), "\U0001F600")
        check("string", host.echo_string("héllo wörld"), "héllo wörld")
        check("bytes", host.echo_bytes(bytes(range(256)) * 4), bytes(range(256)) * 4)
        check("bytes-empty", host.echo_bytes(b""), b"")
        check("list", host.echo_list(["a", "", "ccc"]), ["a", "", "ccc"])
        p = types.Point(x=-1, y=2, label="pt")
        check("point", host.echo_point(p), p)
        check("tuple", host.echo_tuple((7, "seven", False)), (7, "seven", False))
        s = types.Shape_Square(types.Point(x=3, y=4, label="sq"))
        check("shape-square", host.echo_shape(s), s)
        check("shape-circle", host.echo_shape(types.Shape_Circle(2.5)), types.Shape_Circle(2.5))
        check("shape-empty", host.echo_shape(types.Shape_Empty()), types.Shape_Empty())
        check("color", host.echo_color(types.Color.BLUE), types.Color.BLUE)
        perms = types.Perms.READ | types.Perms.EXEC
        check("perms", host.echo_perms(perms), perms)
        check("perms-none", host.echo_perms(types.Perms(0)), types.Perms(0))
        check("option-some", host.echo_option("x"), "x")
        check("option-none", host.echo_option(None), None)
        check("result-ok", host.echo_result(Ok(5)), 5)
        try:
            host.echo_result(Err("bad"))
            bad.append("result-err: no error raised")
        except Err as e:
            check("result-err", e.value, "bad")
        return "ok" if not bad else "; ".join(bad)

    def use_counter(self, start, n):
        c = host.make_counter(start)
        last = start
        for _ in range(n):
            last = c.incr()
        c.__exit__(None, None, None)
        return last

    def slow(self, x, ms):
        return host.slow_echo(x, ms)

    def call_fail(self):
        return host.fail(1)

    def pump(self, total, chunk):
        block = b"x" * chunk
        sent = 0
        while sent < total:
            n = min(chunk, total - sent)
            sent += len(host.echo_bytes(block[:n]))
        return sent

    def push(self, total, chunk):
        block = b"y" * chunk
        sent = 0
        while sent < total:
            n = min(chunk, total - sent)
            sent += host.sink_bytes(block if n == chunk else block[:n])
        return sent

    def pull(self, total, chunk):
        got = 0
        while got < total:
            got += len(host.source_bytes(min(chunk, total - got)))
        return got
