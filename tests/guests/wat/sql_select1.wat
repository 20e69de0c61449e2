;; One pooled-database round trip through the typed fabric:dbpool/sql import, without a
;; language runtime and without a socket.
;;
;; wasi:cli/run: open a connection to the dbpool service on PORT ([static]connection.open),
;; run `SELECT 1` on database DB (connection.query), drop the connection, and return ok
;; only when both calls returned ok and the reply holds exactly one row.
;;
;; Arguments: [PORT [DB]] after the program name; defaults 7000 and "pg".
;;
;; Memory (one page, grown only for long arguments or replies):
;;   16        return area of lowered imports (32 bytes, 8-aligned)
;;   1024..    constants
;;   32768     bump heap for cabi_realloc (arguments, the reply), reset after each run
(component
  (import "wasi:cli/environment@0.2.0" (instance $env
    (export "get-arguments" (func (result (list string))))
  ))
  (import "fabric:dbpool/sql" (instance $sql
    (type $iv (record (field "days" s32) (field "seconds" s32) (field "microseconds" s32)))
    (export "interval" (type $interval (eq $iv)))
    (type $v (variant
      (case "null") (case "boolean" bool) (case "int64" s64) (case "float64" f64)
      (case "text" string) (case "bytes" (list u8)) (case "decimal" string)
      (case "date" string) (case "time" string) (case "timestamp" string)
      (case "interval" $interval) (case "uuid" string) (case "json" string)))
    (export "value" (type $value (eq $v)))
    (type $e (record (field "code" string) (field "sqlstate" (option string))
      (field "db-code" (option string)) (field "message" string)))
    (export "sql-error" (type $sql-error (eq $e)))
    (type $r (record (field "columns" (list string)) (field "rows" (list (list $value)))
      (field "rowcount" s64)))
    (export "rows" (type $rows (eq $r)))
    (export "connection" (type $conn (sub resource)))
    (export "[static]connection.open"
      (func (param "port" u16) (result (result (own $conn) (error $sql-error)))))
    (export "[method]connection.query"
      (func (param "self" (borrow $conn)) (param "db" string) (param "sql" string)
        (param "params" (list $value)) (result (result $rows (error $sql-error)))))
  ))
  (alias export $sql "connection" (type $connection))

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
  (core func $open (canon lower (func $sql "[static]connection.open")
    (memory (core memory $a "memory")) (realloc (core func $a "cabi_realloc"))))
  (core func $query (canon lower (func $sql "[method]connection.query")
    (memory (core memory $a "memory")) (realloc (core func $a "cabi_realloc"))))
  (core func $drop-connection (canon resource.drop $connection))

  (core module $m
    (import "a" "memory" (memory 1))
    (import "a" "heap" (global $heap (mut i32)))
    (import "w" "get-arguments" (func $get-arguments (param i32)))
    ;; port, return area
    (import "w" "open" (func $open (param i32 i32)))
    ;; self, db, sql, params (pointer and length each), return area
    (import "w" "query" (func $query (param i32 i32 i32 i32 i32 i32 i32 i32)))
    (import "w" "drop-connection" (func $drop-connection (param i32)))

    (data (i32.const 1088) "SELECT 1")
    (data (i32.const 1216) "pg")

    (global $conn (mut i32) (i32.const -1))

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

    ;; The round trip; 0 = ok, 1 = err. The connection lives in a global for $cleanup.
    (func $round_trip (result i32)
      (local $args i32) (local $nargs i32) (local $port i32) (local $db i32) (local $db_len i32)
      (local.set $port (i32.const 7000))
      (local.set $db (i32.const 1216))
      (local.set $db_len (i32.const 2))

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

      ;; result<own<connection>, sql-error>: case byte at 16, the handle at 20
      (call $open (local.get $port) (i32.const 16))
      (if (i32.load8_u (i32.const 16)) (then (return (i32.const 1))))
      (global.set $conn (i32.load (i32.const 20)))

      ;; result<rows, sql-error>: case byte at 16, rows at 24 (8-aligned: rowcount is s64):
      ;; columns (ptr, len) at 24, rows (ptr, len) at 32, rowcount at 40
      (call $query (global.get $conn) (local.get $db) (local.get $db_len)
        (i32.const 1088) (i32.const 8) (i32.const 0) (i32.const 0) (i32.const 16))
      (if (i32.load8_u (i32.const 16)) (then (return (i32.const 1))))
      (if (i32.ne (i32.load (i32.const 36)) (i32.const 1)) (then (return (i32.const 1))))
      (i32.const 0))

    (func $cleanup
      (if (i32.ge_s (global.get $conn) (i32.const 0))
        (then (call $drop-connection (global.get $conn))))
      (global.set $conn (i32.const -1)))

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
      (export "open" (func $open))
      (export "query" (func $query))
      (export "drop-connection" (func $drop-connection))))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-inst (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run-inst))
)
