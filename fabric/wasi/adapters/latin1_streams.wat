;; The latin-1 streams adapter: composed in front of a guest, it exports the
;; byte-moving functions of wasi:io/streams over fabric:io/latin1, whose
;; imports are lowered with string-encoding=latin1+utf16 (docs/bytes-as-strings.md).
;;
;; The stream resource types are the host's, re-exported unchanged, so the
;; guest's other imports (wasi:sockets, wasi:cli) that hand out streams stay
;; type-compatible; every other streams function can be passed through as is.
;; A list<u8> the guest writes is copied into this component's memory by
;; wasmtime's compiled component-to-component copy and handed to the host as
;; the same pointer and length: its bytes are latin-1 code units. A string the
;; host returns lands here as latin-1 and goes back to the guest as list<u8>.
;; No call overlaps another, so every allocation gets the same area.
(component $latin1-streams
  (import "error" (instance $error-in
    (export "error" (type (sub resource)))
  ))
  (alias export $error-in "error" (type $error))
  (import "streams" (instance $streams-in
    (alias outer $latin1-streams $error (type $e))
    (export "error" (type $e2 (eq $e)))
    (export "input-stream" (type $is (sub resource)))
    (export "output-stream" (type $os (sub resource)))
    (type $se (variant (case "last-operation-failed" (own $e2)) (case "closed")))
    (export "stream-error" (type $se2 (eq $se)))
    (export "[method]output-stream.check-write"
      (func (param "self" (borrow $os)) (result (result u64 (error $se2)))))
  ))
  (alias export $streams-in "input-stream" (type $is))
  (alias export $streams-in "output-stream" (type $os))
  (alias export $streams-in "stream-error" (type $se))
  (alias export $streams-in "[method]output-stream.check-write" (func $check-write))
  (import "latin1" (instance $latin1
    (alias outer $latin1-streams $is (type $is))
    (alias outer $latin1-streams $os (type $os))
    (alias outer $latin1-streams $se (type $se))
    (export "write" (func (param "s" (borrow $os)) (param "contents" string)
      (result (result (error $se)))))
    (export "read" (func (param "s" (borrow $is)) (param "len" u64)
      (result (result string (error $se)))))
  ))
  (core module $mem
    (memory (export "memory") 4)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 65536))
  )
  (core instance $mi (instantiate $mem))
  (alias core export $mi "memory" (core memory $memory))
  (alias core export $mi "realloc" (core func $realloc))
  (core func $l1-write (canon lower (func $latin1 "write") (memory $memory) (realloc $realloc)
    string-encoding=latin1+utf16))
  (core func $l1-read (canon lower (func $latin1 "read") (memory $memory) (realloc $realloc)
    string-encoding=latin1+utf16))
  ;; a borrow lent to an export is dropped by the callee before it returns
  (core func $drop-os (canon resource.drop $os))
  (core func $drop-is (canon resource.drop $is))
  (core module $m
    (import "host" "write" (func $write (param i32 i32 i32 i32)))
    (import "host" "read" (func $read (param i32 i64 i32)))
    (import "host" "drop-os" (func $drop_os (param i32)))
    (import "host" "drop-is" (func $drop_is (param i32)))
    ;; the result area: results go back to the guest from offset 16
    (func (export "write") (param $h i32) (param $ptr i32) (param $len i32) (result i32)
      (call $write (local.get $h) (local.get $ptr) (local.get $len) (i32.const 16))
      (call $drop_os (local.get $h))
      (i32.const 16))
    (func (export "read") (param $h i32) (param $len i64) (result i32)
      (call $read (local.get $h) (local.get $len) (i32.const 16))
      (call $drop_is (local.get $h))
      (i32.const 16))
  )
  (core instance $hi
    (export "write" (func $l1-write)) (export "read" (func $l1-read))
    (export "drop-os" (func $drop-os)) (export "drop-is" (func $drop-is)))
  (core instance $i (instantiate $m (with "host" (instance $hi))))
  (func $write (param "self" (borrow $os)) (param "contents" (list u8))
    (result (result (error $se)))
    (canon lift (core func $i "write") (memory $memory) (realloc $realloc)))
  (func $read (param "self" (borrow $is)) (param "len" u64)
    (result (result (list u8) (error $se)))
    (canon lift (core func $i "read") (memory $memory) (realloc $realloc)))
  ;; A component's exports name the types its functions use; an instance
  ;; built from loose exports cannot, so a small shim re-exports the host's
  ;; types with this component's functions as one instance.
  (component $shim
    (import "error" (type $e (sub resource)))
    (import "input-stream" (type $is (sub resource)))
    (import "output-stream" (type $os (sub resource)))
    (type $se-def (variant (case "last-operation-failed" (own $e)) (case "closed")))
    (import "stream-error" (type $se (eq $se-def)))
    (import "check-write" (func $check-write
      (param "self" (borrow $os)) (result (result u64 (error $se)))))
    (import "write" (func $write (param "self" (borrow $os)) (param "contents" (list u8))
      (result (result (error $se)))))
    (import "read" (func $read (param "self" (borrow $is)) (param "len" u64)
      (result (result (list u8) (error $se)))))
    (export $e2 "error" (type $e))
    (export $is2 "input-stream" (type $is))
    (export $os2 "output-stream" (type $os))
    (type $se-local (variant (case "last-operation-failed" (own $e2)) (case "closed")))
    (export $se2 "stream-error" (type $se-local))
    (export "[method]output-stream.check-write" (func $check-write)
      (func (param "self" (borrow $os2)) (result (result u64 (error $se2)))))
    (export "[method]output-stream.write" (func $write)
      (func (param "self" (borrow $os2)) (param "contents" (list u8))
        (result (result (error $se2)))))
    (export "[method]input-stream.read" (func $read)
      (func (param "self" (borrow $is2)) (param "len" u64)
        (result (result (list u8) (error $se2)))))
  )
  (instance $out (instantiate $shim
    (with "error" (type $error))
    (with "input-stream" (type $is))
    (with "output-stream" (type $os))
    (with "stream-error" (type $se))
    (with "check-write" (func $check-write))
    (with "write" (func $write))
    (with "read" (func $read))
  ))
  (export "streams" (instance $out))
)
