;; Moves bytes across the component boundary as list<u8> and as string, for
;; benches/engine_facts.py. The string imports are lowered with
;; string-encoding=latin1+utf16, so a byte 0-255 travels as one latin-1 code
;; unit (the guest's memory holds the bytes themselves).
(component
  (import "fabric:bench/bytes" (instance $host
    (export "take-str" (func (param "s" string) (result u32)))
    (export "give-str" (func (param "n" u32) (result string)))
    (export "take-bytes" (func (param "b" (list u8)) (result u32)))
    (export "give-bytes" (func (param "n" u32) (result (list u8))))
  ))
  (core module $mem
    (memory (export "memory") 8)
    ;; Every allocation gets the same 256 KiB area at 128 KiB: each result is
    ;; consumed before the next call.
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 131072))
  )
  (core instance $mi (instantiate $mem))
  (alias core export $mi "memory" (core memory $memory))
  (alias core export $mi "realloc" (core func $realloc))
  (core func $take-str (canon lower (func $host "take-str") (memory $memory) (realloc $realloc) string-encoding=latin1+utf16))
  (core func $give-str (canon lower (func $host "give-str") (memory $memory) (realloc $realloc) string-encoding=latin1+utf16))
  (core func $take-bytes (canon lower (func $host "take-bytes") (memory $memory) (realloc $realloc)))
  (core func $give-bytes (canon lower (func $host "give-bytes") (memory $memory) (realloc $realloc)))
  (core module $m
    (import "env" "memory" (memory 1))
    (import "host" "take-str" (func $take_str (param i32 i32) (result i32)))
    (import "host" "give-str" (func $give_str (param i32 i32)))
    (import "host" "take-bytes" (func $take_bytes (param i32 i32) (result i32)))
    (import "host" "give-bytes" (func $give_bytes (param i32 i32)))
    ;; bytes 0..65535 of memory = i mod 256: every latin-1 code unit
    (func $fill (local $i i32)
      (block $done (loop $l
        (br_if $done (i32.ge_u (local.get $i) (i32.const 65536)))
        (i32.store8 (local.get $i) (local.get $i))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l))))
    ;; push-*: total bytes to the host, chunk at a time; returns what the host counted
    (func (export "push-str") (param $total i32) (param $chunk i32) (result i64) (local $sum i64)
      (call $fill)
      (block $done (loop $l
        (br_if $done (i32.lt_u (local.get $total) (local.get $chunk)))
        (local.set $sum (i64.add (local.get $sum)
          (i64.extend_i32_u (call $take_str (i32.const 0) (local.get $chunk)))))
        (local.set $total (i32.sub (local.get $total) (local.get $chunk)))
        (br $l)))
      (local.get $sum))
    (func (export "push-bytes") (param $total i32) (param $chunk i32) (result i64) (local $sum i64)
      (call $fill)
      (block $done (loop $l
        (br_if $done (i32.lt_u (local.get $total) (local.get $chunk)))
        (local.set $sum (i64.add (local.get $sum)
          (i64.extend_i32_u (call $take_bytes (i32.const 0) (local.get $chunk)))))
        (local.set $total (i32.sub (local.get $total) (local.get $chunk)))
        (br $l)))
      (local.get $sum))
    ;; pull-*: total bytes from the host; returns the code units / bytes received
    (func (export "pull-str") (param $total i32) (param $chunk i32) (result i64) (local $sum i64)
      (block $done (loop $l
        (br_if $done (i32.lt_u (local.get $total) (local.get $chunk)))
        (call $give_str (local.get $chunk) (i32.const 65536))
        (local.set $sum (i64.add (local.get $sum) (i64.extend_i32_u
          (i32.and (i32.load (i32.const 65540)) (i32.const 0x7fffffff)))))
        (local.set $total (i32.sub (local.get $total) (local.get $chunk)))
        (br $l)))
      (local.get $sum))
    (func (export "pull-bytes") (param $total i32) (param $chunk i32) (result i64) (local $sum i64)
      (block $done (loop $l
        (br_if $done (i32.lt_u (local.get $total) (local.get $chunk)))
        (call $give_bytes (local.get $chunk) (i32.const 65536))
        (local.set $sum (i64.add (local.get $sum) (i64.extend_i32_u (i32.load (i32.const 65540)))))
        (local.set $total (i32.sub (local.get $total) (local.get $chunk)))
        (br $l)))
      (local.get $sum))
  )
  (core instance $hi
    (export "take-str" (func $take-str)) (export "give-str" (func $give-str))
    (export "take-bytes" (func $take-bytes)) (export "give-bytes" (func $give-bytes)))
  (core instance $env (export "memory" (memory $memory)))
  (core instance $i (instantiate $m (with "host" (instance $hi)) (with "env" (instance $env))))
  (func (export "push-str") (param "total" u32) (param "chunk" u32) (result u64) (canon lift (core func $i "push-str")))
  (func (export "push-bytes") (param "total" u32) (param "chunk" u32) (result u64) (canon lift (core func $i "push-bytes")))
  (func (export "pull-str") (param "total" u32) (param "chunk" u32) (result u64) (canon lift (core func $i "pull-str")))
  (func (export "pull-bytes") (param "total" u32) (param "chunk" u32) (result u64) (canon lift (core func $i "pull-bytes")))
)
