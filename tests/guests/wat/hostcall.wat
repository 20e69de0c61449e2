;; Calls a host import n times: export call-n(n) for host-call overhead.
(component
  (import "fabric:bench/host" (instance $host
    (export "noop" (func))
    (export "noop-async" (func))
  ))
  (core func $noop (canon lower (func $host "noop")))
  (core func $noop-async (canon lower (func $host "noop-async")))
  (core module $m
    (import "host" "noop" (func $noop))
    (import "host" "noop-async" (func $noop_async))
    (func (export "call-n") (param $n i32)
      (block $done (loop $l
        (br_if $done (i32.eqz (local.get $n)))
        (call $noop)
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l))))
    (func (export "call-n-async") (param $n i32)
      (block $done (loop $l
        (br_if $done (i32.eqz (local.get $n)))
        (call $noop_async)
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l))))
    (func (export "nothing"))
  )
  (core instance $hi (export "noop" (func $noop)) (export "noop-async" (func $noop-async)))
  (core instance $i (instantiate $m (with "host" (instance $hi))))
  (func (export "call-n") (param "n" u32) (canon lift (core func $i "call-n")))
  (func (export "call-n-async") (param "n" u32) (canon lift (core func $i "call-n-async")))
  (func (export "nothing") (canon lift (core func $i "nothing")))
)
