;; An unmodified-style guest (it imports wasi:io/streams and moves list<u8>)
;; composed with the latin-1 streams adapter: the outer component gives the
;; guest the adapter's wasi:io/streams, whose write and read reach the host as
;; latin-1 strings through fabric:io/latin1. The adapter's text replaces the
;; ADAPTER line, and the guest gets STREAMS: $adapted (through the adapter)
;; or $streams-in (the host's list<u8> functions directly), for comparison.
;; echo(in, out, n): copies up to n bytes from `in` to `out`, returns the count.
(component $outer
  (import "wasi:io/error@0.2.0" (instance $error-in
    (export "error" (type (sub resource)))
  ))
  (alias export $error-in "error" (type $error))
  (import "wasi:io/streams@0.2.0" (instance $streams-in
    (alias outer $outer $error (type $e))
    (export "error" (type $e2 (eq $e)))
    (export "input-stream" (type $is (sub resource)))
    (export "output-stream" (type $os (sub resource)))
    (type $se (variant (case "last-operation-failed" (own $e2)) (case "closed")))
    (export "stream-error" (type $se2 (eq $se)))
    (export "[method]output-stream.check-write"
      (func (param "self" (borrow $os)) (result (result u64 (error $se2)))))
    (export "[method]output-stream.write"
      (func (param "self" (borrow $os)) (param "contents" (list u8))
        (result (result (error $se2)))))
    (export "[method]input-stream.read"
      (func (param "self" (borrow $is)) (param "len" u64)
        (result (result (list u8) (error $se2)))))
  ))
  (alias export $streams-in "input-stream" (type $is))
  (alias export $streams-in "output-stream" (type $os))
  (alias export $streams-in "stream-error" (type $se))
  (import "fabric:io/latin1@0.1.0" (instance $latin1-in
    (alias outer $outer $is (type $is))
    (alias outer $outer $os (type $os))
    (alias outer $outer $se (type $se))
    (export "write" (func (param "s" (borrow $os)) (param "contents" string)
      (result (result (error $se)))))
    (export "read" (func (param "s" (borrow $is)) (param "len" u64)
      (result (result string (error $se)))))
  ))
  ADAPTER
  (instance $a (instantiate $latin1-streams
    (with "error" (instance $error-in))
    (with "streams" (instance $streams-in))
    (with "latin1" (instance $latin1-in))
  ))
  (alias export $a "streams" (instance $adapted))
  (component $guest
    (import "wasi:io/error@0.2.0" (instance $gerr
      (export "error" (type (sub resource)))
    ))
    (alias export $gerr "error" (type $gerror))
    (import "wasi:io/streams@0.2.0" (instance $s
      (alias outer $guest $gerror (type $e))
      (export "error" (type $e2 (eq $e)))
      (export "input-stream" (type $is (sub resource)))
      (export "output-stream" (type $os (sub resource)))
      (type $se (variant (case "last-operation-failed" (own $e2)) (case "closed")))
      (export "stream-error" (type $se2 (eq $se)))
      (export "[method]output-stream.check-write"
        (func (param "self" (borrow $os)) (result (result u64 (error $se2)))))
      (export "[method]output-stream.write"
        (func (param "self" (borrow $os)) (param "contents" (list u8))
          (result (result (error $se2)))))
      (export "[method]input-stream.read"
        (func (param "self" (borrow $is)) (param "len" u64)
          (result (result (list u8) (error $se2)))))
    ))
    (alias export $s "input-stream" (type $is))
    (alias export $s "output-stream" (type $os))
    (core module $gmem
      (memory (export "memory") 4)
      (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 65536))
    )
    (core instance $gmi (instantiate $gmem))
    (alias core export $gmi "memory" (core memory $memory))
    (alias core export $gmi "realloc" (core func $realloc))
    (core func $read (canon lower (func $s "[method]input-stream.read")
      (memory $memory) (realloc $realloc)))
    (core func $write (canon lower (func $s "[method]output-stream.write")
      (memory $memory) (realloc $realloc)))
    (core func $check-write (canon lower (func $s "[method]output-stream.check-write")
      (memory $memory)))
    (core func $drop-in (canon resource.drop $is))
    (core func $drop-out (canon resource.drop $os))
    (core module $gm
      (import "env" "memory" (memory 1))
      (import "s" "read" (func $read (param i32 i64 i32)))
      (import "s" "write" (func $write (param i32 i32 i32 i32)))
      (import "s" "check-write" (func $cw (param i32 i32)))
      (import "s" "drop-in" (func $drop_in (param i32)))
      (import "s" "drop-out" (func $drop_out (param i32)))
      (func (export "echo") (param $in i32) (param $out i32) (param $n i32) (result i32)
        (local $total i32) (local $len i32)
        (block $done (loop $l
          (br_if $done (i32.ge_u (local.get $total) (local.get $n)))
          (call $read (local.get $in) (i64.const 65536) (i32.const 0))
          (br_if $done (i32.load8_u (i32.const 0)))
          (local.set $len (i32.load (i32.const 8)))
          (call $cw (local.get $out) (i32.const 32))
          (br_if $done (i32.load8_u (i32.const 32)))
          (call $write (local.get $out) (i32.load (i32.const 4)) (local.get $len) (i32.const 64))
          (br_if $done (i32.load8_u (i32.const 64)))
          (local.set $total (i32.add (local.get $total) (local.get $len)))
          (br $l)))
        (call $drop_in (local.get $in))
        (call $drop_out (local.get $out))
        (local.get $total))
    )
    (core instance $env (export "memory" (memory $memory)))
    (core instance $si
      (export "read" (func $read)) (export "write" (func $write))
      (export "check-write" (func $check-write))
      (export "drop-in" (func $drop-in)) (export "drop-out" (func $drop-out)))
    (core instance $gi (instantiate $gm (with "env" (instance $env)) (with "s" (instance $si))))
    (func (export "echo") (param "in" (own $is)) (param "out" (own $os)) (param "n" u32)
      (result u32) (canon lift (core func $gi "echo")))
  )
  (instance $g (instantiate $guest
    (with "wasi:io/error@0.2.0" (instance $error-in))
    (with "wasi:io/streams@0.2.0" (instance STREAMS))
  ))
  (alias export $g "echo" (func $echo))
  (export "echo" (func $echo)
    (func (param "in" (own $is)) (param "out" (own $os)) (param "n" u32) (result u32)))
)
