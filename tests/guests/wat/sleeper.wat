;; Sleeps on a wasi:clocks monotonic pollable: export sleep(ns).
(component
  (import "wasi:io/poll@0.2.0" (instance $poll
    (export "pollable" (type (sub resource)))
    (export "[method]pollable.block" (func (param "self" (borrow 0))))
  ))
  (alias export $poll "pollable" (type $pollable))
  (import "wasi:clocks/monotonic-clock@0.2.0" (instance $clock
    (alias outer 1 $pollable (type $p))
    (export "pollable" (type (eq $p)))
    (export "subscribe-duration" (func (param "when" u64) (result (own 1))))
  ))
  (core func $subscribe (canon lower (func $clock "subscribe-duration")))
  (core func $block (canon lower (func $poll "[method]pollable.block")))
  (core func $drop (canon resource.drop $pollable))
  (core module $m
    (import "host" "subscribe" (func $subscribe (param i64) (result i32)))
    (import "host" "block" (func $block (param i32)))
    (import "host" "drop" (func $drop (param i32)))
    (func (export "sleep") (param $ns i64)
      (local $p i32)
      (local.set $p (call $subscribe (local.get $ns)))
      (call $block (local.get $p))
      (call $drop (local.get $p)))
  )
  (core instance $host
    (export "subscribe" (func $subscribe))
    (export "block" (func $block))
    (export "drop" (func $drop)))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func (export "sleep") (param "ns" u64) (canon lift (core func $i "sleep")))
)
