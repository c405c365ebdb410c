//! `spool verify --against OTHER_BINARY`: the same log folded by this build and another one.
//! The same build agrees; a build whose fold was changed on purpose (debug failpoint
//! `fold_changed`: index names upper-cased) is caught at the first event it folds differently.

use std::process::Command;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn a_deliberately_changed_fold_is_caught_at_its_first_event() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/datadirs/v1-demo/data");
    copy_dir(&fixture, &data);
    let spool = env!("CARGO_BIN_EXE_spool");
    let run = |other: &std::path::Path| {
        Command::new(spool).arg("verify").arg("--against").arg(other).arg("--data-dir").arg(&data).output().unwrap()
    };
    let same = run(std::path::Path::new(spool));
    let text = String::from_utf8_lossy(&same.stdout);
    assert!(same.status.success() && text.contains("both builds fold the 192 events to the same state"), "{text}");

    let changed = work.path().join("changed.sh");
    std::fs::write(&changed, format!("#!/bin/sh\nSPOOL_FAILPOINTS=fold_changed exec {spool} \"$@\"\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&changed, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(&changed);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("the states first differ after event 1:") && text.contains("IndexCreated"), "{text}");
}
