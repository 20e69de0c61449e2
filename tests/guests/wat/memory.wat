;; Grows its memory on request: export grow(pages) -> s32 (memory.grow's result).
(component
  (core module $m
    (memory 1)
    (func (export "grow") (param i32) (result i32)
      (memory.grow (local.get 0))))
  (core instance $i (instantiate $m))
  (func (export "grow") (param "pages" u32) (result s32) (canon lift (core func $i "grow")))
)
