;; One pooled-database round trip through the dbpool service, without a language runtime.
;;
;; wasi:cli/run: connect to 127.0.0.1:PORT over wasi:sockets TCP, send the dbpool client
;; hello and one `query` frame (id 1, `SELECT 1` on database DB), read the server hello and
;; the response frame, and return ok only for an accepted handshake and a `rows` reply
;; to request 1 (an `error` reply, a refused handshake or any I/O failure returns err).
;;
;; Arguments: [PORT [DB]] after the program name; defaults 7000 and "pg".
;; The wire bytes in the generated block below come from services/dbpool's own encoder:
;; regenerate with `python tests/guests/wat/gen_dbpool_select1.py`.
;;
;; Memory (one page, grown only for very long arguments):
;;   16        return area of lowered imports (12 bytes)
;;   256       request: client hello (8), frame length (4), query body
;;   1024..    constants (generated block)
;;   4096      response: server hello (16), frame length (4), body (at most 16 KiB)
;;   32768     bump heap for cabi_realloc (arguments)
(component
  (import "wasi:cli/environment@0.2.0" (instance $env
    (export "get-arguments" (func (result (list string))))
  ))
  (import "wasi:io/error@0.2.0" (instance $io-error
    (export "error" (type (sub resource)))
  ))
  (alias export $io-error "error" (type $error))
  (import "wasi:io/poll@0.2.0" (instance $poll
    (export "pollable" (type $pollable (sub resource)))
    (export "[method]pollable.block" (func (param "self" (borrow $pollable))))
  ))
  (alias export $poll "pollable" (type $pollable))
  (import "wasi:io/streams@0.2.0" (instance $streams
    (alias outer 1 $error (type $e))
    (export "error" (type $err (eq $e)))
    (type $se (variant (case "last-operation-failed" (own $err)) (case "closed")))
    (export "stream-error" (type $stream-error (eq $se)))
    (export "input-stream" (type $input (sub resource)))
    (export "output-stream" (type $output (sub resource)))
    (export "[method]input-stream.blocking-read"
      (func (param "self" (borrow $input)) (param "len" u64)
        (result (result (list u8) (error $stream-error)))))
    (export "[method]output-stream.blocking-write-and-flush"
      (func (param "self" (borrow $output)) (param "contents" (list u8))
        (result (result (error $stream-error)))))
  ))
  (alias export $streams "input-stream" (type $input-stream))
  (alias export $streams "output-stream" (type $output-stream))
  (import "wasi:sockets/network@0.2.0" (instance $network
    (export "network" (type (sub resource)))
    (type $ec (enum "unknown" "access-denied" "not-supported" "invalid-argument"
      "out-of-memory" "timeout" "concurrency-conflict" "not-in-progress" "would-block"
      "invalid-state" "new-socket-limit" "address-not-bindable" "address-in-use"
      "remote-unreachable" "connection-refused" "connection-reset" "connection-aborted"
      "datagram-too-large" "name-unresolvable" "temporary-resolver-failure"
      "permanent-resolver-failure"))
    (export "error-code" (type (eq $ec)))
    (type $af (enum "ipv4" "ipv6"))
    (export "ip-address-family" (type (eq $af)))
    (type $v4 (record (field "port" u16) (field "address" (tuple u8 u8 u8 u8))))
    (export "ipv4-socket-address" (type $ipv4-sa (eq $v4)))
    (type $v6 (record (field "port" u16) (field "flow-info" u32)
      (field "address" (tuple u16 u16 u16 u16 u16 u16 u16 u16)) (field "scope-id" u32)))
    (export "ipv6-socket-address" (type $ipv6-sa (eq $v6)))
    (type $sa (variant (case "ipv4" $ipv4-sa) (case "ipv6" $ipv6-sa)))
    (export "ip-socket-address" (type (eq $sa)))
  ))
  (alias export $network "network" (type $network-t))
  (alias export $network "error-code" (type $error-code))
  (alias export $network "ip-address-family" (type $ip-address-family))
  (alias export $network "ip-socket-address" (type $ip-socket-address))
  (import "wasi:sockets/instance-network@0.2.0" (instance $instance-network
    (alias outer 1 $network-t (type $n))
    (export "network" (type $net (eq $n)))
    (export "instance-network" (func (result (own $net))))
  ))
  (import "wasi:sockets/tcp@0.2.0" (instance $tcp
    (alias outer 1 $input-stream (type $i))
    (export "input-stream" (type $in (eq $i)))
    (alias outer 1 $output-stream (type $o))
    (export "output-stream" (type $out (eq $o)))
    (alias outer 1 $pollable (type $p))
    (export "pollable" (type $poll (eq $p)))
    (alias outer 1 $network-t (type $n))
    (export "network" (type $net (eq $n)))
    (alias outer 1 $error-code (type $ec))
    (export "error-code" (type $err (eq $ec)))
    (alias outer 1 $ip-socket-address (type $sa))
    (export "ip-socket-address" (type $addr (eq $sa)))
    (export "tcp-socket" (type $sock (sub resource)))
    (export "[method]tcp-socket.start-connect"
      (func (param "self" (borrow $sock)) (param "network" (borrow $net))
        (param "remote-address" $addr) (result (result (error $err)))))
    (export "[method]tcp-socket.finish-connect"
      (func (param "self" (borrow $sock))
        (result (result (tuple (own $in) (own $out)) (error $err)))))
    (export "[method]tcp-socket.subscribe" (func (param "self" (borrow $sock)) (result (own $poll))))
  ))
  (alias export $tcp "tcp-socket" (type $tcp-socket))
  (import "wasi:sockets/tcp-create-socket@0.2.0" (instance $tcp-create-socket
    (alias outer 1 $error-code (type $ec))
    (export "error-code" (type $err (eq $ec)))
    (alias outer 1 $ip-address-family (type $af))
    (export "ip-address-family" (type $fam (eq $af)))
    (alias outer 1 $tcp-socket (type $s))
    (export "tcp-socket" (type $sock (eq $s)))
    (export "create-tcp-socket"
      (func (param "address-family" $fam) (result (result (own $sock) (error $err)))))
  ))

  ;; Linear memory and a bump allocator, instantiated first so the imports can be lowered
  ;; against them; the main module imports both and moves the heap pointer itself to make
  ;; blocking-read land its bytes where the response buffer needs them.
  (core module $alloc
    (memory (export "memory") 1)
    (global $heap (export "heap") (mut i32) (i32.const 32768))
    (func (export "cabi_realloc")
      (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $p i32) (local $end i32) (local $have i32)
      (local.set $p (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $p) (local.get $size)))
      (if (i32.lt_u (local.get $end) (local.get $p)) (then unreachable))
      (local.set $have (i32.shl (memory.size) (i32.const 16)))
      (if (i32.gt_u (local.get $end) (local.get $have))
        (then
          (if (i32.eq (i32.const -1) (memory.grow (i32.shr_u
                (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                (i32.const 16))))
            (then unreachable))))
      (if (local.get $old)
        (then (memory.copy (local.get $p) (local.get $old)
          (select (local.get $old_size) (local.get $size)
            (i32.lt_u (local.get $old_size) (local.get $size))))))
      (global.set $heap (local.get $end))
      (local.get $p))
  )
  (core instance $a (instantiate $alloc))

  (core func $get-arguments (canon lower (func $env "get-arguments")
    (memory (core memory $a "memory")) (realloc (core func $a "cabi_realloc"))))
  (core func $instance-network (canon lower (func $instance-network "instance-network")))
  (core func $create-tcp-socket (canon lower (func $tcp-create-socket "create-tcp-socket")
    (memory (core memory $a "memory"))))
  (core func $start-connect (canon lower (func $tcp "[method]tcp-socket.start-connect")
    (memory (core memory $a "memory"))))
  (core func $finish-connect (canon lower (func $tcp "[method]tcp-socket.finish-connect")
    (memory (core memory $a "memory"))))
  (core func $subscribe (canon lower (func $tcp "[method]tcp-socket.subscribe")))
  (core func $block (canon lower (func $poll "[method]pollable.block")))
  (core func $blocking-read (canon lower (func $streams "[method]input-stream.blocking-read")
    (memory (core memory $a "memory")) (realloc (core func $a "cabi_realloc"))))
  (core func $blocking-write (canon lower
    (func $streams "[method]output-stream.blocking-write-and-flush")
    (memory (core memory $a "memory"))))
  (core func $drop-pollable (canon resource.drop $pollable))
  (core func $drop-input (canon resource.drop $input-stream))
  (core func $drop-output (canon resource.drop $output-stream))
  (core func $drop-socket (canon resource.drop $tcp-socket))
  (core func $drop-network (canon resource.drop $network-t))
  (core func $drop-error (canon resource.drop $error))

  (core module $m
    (import "a" "memory" (memory 1))
    (import "a" "heap" (global $heap (mut i32)))
    (import "w" "get-arguments" (func $get-arguments (param i32)))
    (import "w" "instance-network" (func $instance-network (result i32)))
    (import "w" "create-tcp-socket" (func $create-tcp-socket (param i32 i32)))
    ;; self, network, ip-socket-address flattened (case + 11 joined slots), return area
    (import "w" "start-connect" (func $start-connect
      (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32)))
    (import "w" "finish-connect" (func $finish-connect (param i32 i32)))
    (import "w" "subscribe" (func $subscribe (param i32) (result i32)))
    (import "w" "block" (func $block (param i32)))
    (import "w" "blocking-read" (func $blocking-read (param i32 i64 i32)))
    (import "w" "blocking-write" (func $blocking-write (param i32 i32 i32 i32)))
    (import "w" "drop-pollable" (func $drop-pollable (param i32)))
    (import "w" "drop-input" (func $drop-input (param i32)))
    (import "w" "drop-output" (func $drop-output (param i32)))
    (import "w" "drop-socket" (func $drop-socket (param i32)))
    (import "w" "drop-network" (func $drop-network (param i32)))
    (import "w" "drop-error" (func $drop-error (param i32)))

    ;; BEGIN generated by gen_dbpool_select1.py
    ;; client hello; the frame length follows it
    (data (i32.const 256) "FDBP\00\01\00\00")
    ;; query body before the db string ('SELECT 1', id 1)
    (global $query_head_len i32 (i32.const 16))
    (data (i32.const 1024) "\85\a1t\a5query\a2id\01\a2db")
    ;; query body after the db string
    (global $query_tail_len i32 (i32.const 21))
    (data (i32.const 1088) "\a3sql\a8SELECT 1\a6params\90")
    ;; accepted server hello, first 8 bytes: magic, version, status ok
    (data (i32.const 1152) "FDBP\00\01\00\00")
    ;; a rows reply to request 1 starts with these bytes
    (global $rows_head_len i32 (i32.const 12))
    (data (i32.const 1168) "\85\a1t\a4rows\a2id\01")
    ;; defaults when argv has no PORT / DB
    (global $default_db_len i32 (i32.const 2))
    (data (i32.const 1216) "pg")
    (global $default_port i32 (i32.const 7000))
    ;; END generated

    (global $net (mut i32) (i32.const -1))
    (global $sock (mut i32) (i32.const -1))
    (global $pollable (mut i32) (i32.const -1))
    (global $in (mut i32) (i32.const -1))
    (global $out (mut i32) (i32.const -1))

    ;; Decimal string -> port 1..65535, or -1.
    (func $parse_port (param $p i32) (param $n i32) (result i32)
      (local $v i32) (local $d i32)
      (if (i32.eqz (local.get $n)) (then (return (i32.const -1))))
      (loop $digits
        (local.set $d (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))
        (if (i32.gt_u (local.get $d) (i32.const 9)) (then (return (i32.const -1))))
        (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10)) (local.get $d)))
        (if (i32.gt_u (local.get $v) (i32.const 65535)) (then (return (i32.const -1))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br_if $digits (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
      (if (i32.eqz (local.get $v)) (then (return (i32.const -1))))
      (local.get $v))

    ;; A failed stream call left result<_, stream-error> at 16: drop its error resource.
    (func $drop_stream_error
      (if (i32.eqz (i32.load8_u (i32.const 20)))
        (then (call $drop-error (i32.load (i32.const 24))))))

    ;; Read exactly $n bytes from the input stream to $dst; 1 on success.
    (func $read_exact (param $dst i32) (param $n i32) (result i32)
      (local $got i32)
      (block $done
        (loop $more
          (br_if $done (i32.eqz (local.get $n)))
          ;; cabi_realloc hands out the heap pointer: the bytes land at $dst
          (global.set $heap (local.get $dst))
          (call $blocking-read (global.get $in) (i64.extend_i32_u (local.get $n)) (i32.const 16))
          (if (i32.load8_u (i32.const 16))
            (then (call $drop_stream_error) (return (i32.const 0))))
          (local.set $got (i32.load (i32.const 24)))
          (if (i32.ne (i32.load (i32.const 20)) (local.get $dst))
            (then (memory.copy (local.get $dst) (i32.load (i32.const 20)) (local.get $got))))
          (local.set $dst (i32.add (local.get $dst) (local.get $got)))
          (local.set $n (i32.sub (local.get $n) (local.get $got)))
          (br $more)))
      (i32.const 1))

    (func $store_u32_be (param $p i32) (param $v i32)
      (i32.store8 (local.get $p) (i32.shr_u (local.get $v) (i32.const 24)))
      (i32.store8 offset=1 (local.get $p) (i32.shr_u (local.get $v) (i32.const 16)))
      (i32.store8 offset=2 (local.get $p) (i32.shr_u (local.get $v) (i32.const 8)))
      (i32.store8 offset=3 (local.get $p) (local.get $v)))

    (func $load_u32_be (param $p i32) (result i32)
      (i32.or
        (i32.or (i32.shl (i32.load8_u (local.get $p)) (i32.const 24))
                (i32.shl (i32.load8_u offset=1 (local.get $p)) (i32.const 16)))
        (i32.or (i32.shl (i32.load8_u offset=2 (local.get $p)) (i32.const 8))
                (i32.load8_u offset=3 (local.get $p)))))

    ;; 1 when the $n bytes at $a and $b are equal.
    (func $equal (param $a i32) (param $b i32) (param $n i32) (result i32)
      (block $differ
        (loop $next
          (if (i32.eqz (local.get $n)) (then (return (i32.const 1))))
          (br_if $differ (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b))))
          (local.set $a (i32.add (local.get $a) (i32.const 1)))
          (local.set $b (i32.add (local.get $b) (i32.const 1)))
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br $next)))
      (i32.const 0))

    ;; The round trip; 0 = ok, 1 = err. Handles live in globals for $cleanup.
    (func $round_trip (result i32)
      (local $args i32) (local $nargs i32) (local $port i32)
      (local $db i32) (local $db_len i32) (local $p i32) (local $len i32)
      (local.set $port (global.get $default_port))
      (local.set $db (i32.const 1216))
      (local.set $db_len (global.get $default_db_len))

      ;; arguments: [program, PORT, DB]
      (call $get-arguments (i32.const 16))
      (local.set $args (i32.load (i32.const 16)))
      (local.set $nargs (i32.load (i32.const 20)))
      (if (i32.ge_u (local.get $nargs) (i32.const 2))
        (then
          (local.set $port (call $parse_port
            (i32.load offset=8 (local.get $args)) (i32.load offset=12 (local.get $args))))
          (if (i32.lt_s (local.get $port) (i32.const 0)) (then (return (i32.const 1))))))
      (if (i32.ge_u (local.get $nargs) (i32.const 3))
        (then
          (local.set $db (i32.load offset=16 (local.get $args)))
          (local.set $db_len (i32.load offset=20 (local.get $args)))))
      (if (i32.or (i32.eqz (local.get $db_len)) (i32.gt_u (local.get $db_len) (i32.const 255)))
        (then (return (i32.const 1))))

      ;; connect to 127.0.0.1:port
      (global.set $net (call $instance-network))
      (call $create-tcp-socket (i32.const 0) (i32.const 16))  ;; ipv4
      (if (i32.load8_u (i32.const 16)) (then (return (i32.const 1))))
      (global.set $sock (i32.load (i32.const 20)))
      (call $start-connect (global.get $sock) (global.get $net)
        (i32.const 0) (local.get $port) (i32.const 127) (i32.const 0) (i32.const 0) (i32.const 1)
        (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
        (i32.const 16))
      (if (i32.load8_u (i32.const 16)) (then (return (i32.const 1))))
      (global.set $pollable (call $subscribe (global.get $sock)))
      (loop $wait
        (call $block (global.get $pollable))
        (call $finish-connect (global.get $sock) (i32.const 16))
        (if (i32.load8_u (i32.const 16))
          (then
            (br_if $wait (i32.eq (i32.load8_u (i32.const 20)) (i32.const 8)))  ;; would-block
            (return (i32.const 1)))))
      (call $drop-pollable (global.get $pollable))
      (global.set $pollable (i32.const -1))
      (global.set $in (i32.load (i32.const 20)))
      (global.set $out (i32.load (i32.const 24)))

      ;; request at 256: hello (8, from the data segment), length, head, db str, tail
      (local.set $p (i32.const 268))
      (memory.copy (local.get $p) (i32.const 1024) (global.get $query_head_len))
      (local.set $p (i32.add (local.get $p) (global.get $query_head_len)))
      (if (i32.lt_u (local.get $db_len) (i32.const 32))
        (then  ;; msgpack fixstr
          (i32.store8 (local.get $p) (i32.or (i32.const 0xa0) (local.get $db_len)))
          (local.set $p (i32.add (local.get $p) (i32.const 1))))
        (else  ;; msgpack str8
          (i32.store8 (local.get $p) (i32.const 0xd9))
          (i32.store8 offset=1 (local.get $p) (local.get $db_len))
          (local.set $p (i32.add (local.get $p) (i32.const 2)))))
      (memory.copy (local.get $p) (local.get $db) (local.get $db_len))
      (local.set $p (i32.add (local.get $p) (local.get $db_len)))
      (memory.copy (local.get $p) (i32.const 1088) (global.get $query_tail_len))
      (local.set $p (i32.add (local.get $p) (global.get $query_tail_len)))
      (call $store_u32_be (i32.const 264) (i32.sub (local.get $p) (i32.const 268)))
      (call $blocking-write (global.get $out)
        (i32.const 256) (i32.sub (local.get $p) (i32.const 256)) (i32.const 16))
      (if (i32.load8_u (i32.const 16))
        (then (call $drop_stream_error) (return (i32.const 1))))

      ;; server hello (16) and the response length (4), then the body
      (if (i32.eqz (call $read_exact (i32.const 4096) (i32.const 20)))
        (then (return (i32.const 1))))
      (if (i32.eqz (call $equal (i32.const 4096) (i32.const 1152) (i32.const 8)))
        (then (return (i32.const 1))))
      (local.set $len (call $load_u32_be (i32.const 4112)))
      (if (i32.or (i32.lt_u (local.get $len) (global.get $rows_head_len))
                  (i32.gt_u (local.get $len) (i32.const 16384)))
        (then (return (i32.const 1))))
      (if (i32.eqz (call $read_exact (i32.const 4116) (local.get $len)))
        (then (return (i32.const 1))))
      (if (i32.eqz (call $equal (i32.const 4116) (i32.const 1168) (global.get $rows_head_len)))
        (then (return (i32.const 1))))
      (i32.const 0))

    ;; Drop what is still held: the pollable and both streams before their socket.
    (func $cleanup
      (if (i32.ge_s (global.get $pollable) (i32.const 0))
        (then (call $drop-pollable (global.get $pollable))))
      (if (i32.ge_s (global.get $in) (i32.const 0)) (then (call $drop-input (global.get $in))))
      (if (i32.ge_s (global.get $out) (i32.const 0)) (then (call $drop-output (global.get $out))))
      (if (i32.ge_s (global.get $sock) (i32.const 0))
        (then (call $drop-socket (global.get $sock))))
      (if (i32.ge_s (global.get $net) (i32.const 0))
        (then (call $drop-network (global.get $net))))
      (global.set $pollable (i32.const -1))
      (global.set $in (i32.const -1))
      (global.set $out (i32.const -1))
      (global.set $sock (i32.const -1))
      (global.set $net (i32.const -1)))

    (func (export "run") (result i32)
      (local $r i32)
      (local.set $r (call $round_trip))
      (call $cleanup)
      (global.set $heap (i32.const 32768))
      (local.get $r))
  )
  (core instance $i (instantiate $m
    (with "a" (instance $a))
    (with "w" (instance
      (export "get-arguments" (func $get-arguments))
      (export "instance-network" (func $instance-network))
      (export "create-tcp-socket" (func $create-tcp-socket))
      (export "start-connect" (func $start-connect))
      (export "finish-connect" (func $finish-connect))
      (export "subscribe" (func $subscribe))
      (export "block" (func $block))
      (export "blocking-read" (func $blocking-read))
      (export "blocking-write" (func $blocking-write))
      (export "drop-pollable" (func $drop-pollable))
      (export "drop-input" (func $drop-input))
      (export "drop-output" (func $drop-output))
      (export "drop-socket" (func $drop-socket))
      (export "drop-network" (func $drop-network))
      (export "drop-error" (func $drop-error))))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-inst (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run-inst))
)
