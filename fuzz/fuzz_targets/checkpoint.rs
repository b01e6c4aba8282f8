//! Fuzz the checkpoint file (`spanline forward`'s state, read back from a local file or an S3
//! object anyone with write access to it may have edited): `Checkpoint::parse` must accept it
//! or refuse it with a reason, never panic; what it accepts must write out (`to_bytes`) as bytes
//! that parse back to the same checkpoint, and writing that again gives the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spanline::convert::checkpoint::Checkpoint;

fuzz_target!(|data: &[u8]| {
    let first = match Checkpoint::parse(data, "fuzz") {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let bytes = first.to_bytes();
    let second = match Checkpoint::parse(&bytes, "fuzz") {
        Ok(c) => c,
        Err(e) => panic!("a checkpoint written is refused: {e}"),
    };
    assert_eq!(first, second);
    assert_eq!(bytes, second.to_bytes());
    // What a run does with it: the accepted ids of each group, and its state moved on.
    for (group, state) in &first.groups {
        let _ = state.accepted().len();
        let mut moved = state.clone();
        moved.advance(state.cursor_ms.saturating_add(1), state.cursor_ms);
        assert!(
            moved.cursor_ms >= state.cursor_ms,
            "{group}: the cursor went back"
        );
    }
});
