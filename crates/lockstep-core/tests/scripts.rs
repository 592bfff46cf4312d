//! Runs the protocol scripts under `testdata/`: each command's output must match exactly.
//! `LOCKSTEP_REWRITE=1 cargo test -p lockstep-core --test scripts` rewrites them.

// Tests and benchmarks may read files and clocks; the purity rules are for `src/` only.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod harness;

use std::path::PathBuf;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(format!("{name}.txt"))
}

macro_rules! scripts {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                harness::script::run_file(&script(stringify!($name)));
            }
        )*

        /// Every script under testdata/ is run by a test above.
        #[test]
        fn every_script_is_listed() {
            let listed = [$(stringify!($name)),*];
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata");
            for entry in std::fs::read_dir(&dir).expect("testdata exists") {
                let path = entry.expect("readable testdata").path();
                let stem = path.file_stem().and_then(|stem| stem.to_str()).unwrap_or_default();
                assert!(listed.contains(&stem), "testdata/{stem}.txt is not listed in tests/scripts.rs");
            }
        }
    };
}

scripts!(
    async_persistence,
    backtracking,
    bad_input,
    check_quorum,
    election,
    figure8,
    flow_control,
    lease_read,
    lost_entries,
    pre_vote,
    read_index,
    read_retry,
    rejected_proposals,
    single_node,
    transfer,
    without_pre_vote,
);
