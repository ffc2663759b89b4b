use std::sync::Arc;

use super::*;
use crate::report::{ExceptionInfo, ReportFormat};
use crate::symbolicate::SymbolicatedThread;

fn frame(image: &str, function: Option<&str>, status: FrameStatus, in_app: bool) -> Frame {
    Frame {
        instruction_addr: 0x1_0000_4000,
        relative_addr: Some(0x4000),
        image: Some(Arc::from(image)),
        debug_id: None,
        status,
        function: function.map(Arc::from),
        file: (status == FrameStatus::Symbolicated).then(|| Arc::from("/src/app.c")),
        line: (status == FrameStatus::Symbolicated).then_some(42),
        function_addr: None,
        in_app,
        inlined: false,
    }
}

fn app(function: &str) -> Frame {
    frame("App", Some(function), FrameStatus::Symbolicated, true)
}

fn system(image: &str, function: Option<&str>) -> Frame {
    let status = if function.is_some() {
        FrameStatus::OsSymbol
    } else {
        FrameStatus::MissingDebugFile
    };
    frame(image, function, status, false)
}

fn crash(frames: Vec<Frame>) -> SymbolicatedCrash {
    SymbolicatedCrash {
        threads: vec![SymbolicatedThread {
            index: 0,
            name: None,
            queue: None,
            crashed: true,
            frames,
        }],
        last_exception_backtrace: None,
        images: Vec::new(),
    }
}

fn report(kind: &str, name: Option<&str>, reason: Option<&str>) -> CrashReport {
    let mut report = CrashReport::new(ReportFormat::Ips);
    report.exception = ExceptionInfo {
        kind: Some(kind.to_owned()),
        signal: Some("SIGSEGV".to_owned()),
        name: name.map(str::to_owned),
        reason: reason.map(str::to_owned),
        ..ExceptionInfo::default()
    };
    report
}

#[test]
fn the_site_is_the_first_in_app_frame_after_the_runtime() {
    let crash = crash(vec![
        system("libsystem_kernel.dylib", Some("__pthread_kill")),
        system("libsystem_c.dylib", Some("abort")),
        app("tr_commit_transaction"),
        app("tr_save_draft"),
        system(
            "CoreFoundation",
            Some("__CFRUNLOOP_IS_CALLING_OUT_TO_A_BLOCK__"),
        ),
        app("-[Feed load:]"),
        app("__41-[Feed load:]_block_invoke_2"),
        app("main"),
    ]);
    let sig = sign(
        &report("EXC_CRASH", None, None),
        &crash,
        Rules::builtin_ref(),
    );
    assert_eq!(sig.text, "EXC_CRASH | tr_commit_transaction");
    assert_eq!(sig.exception, "EXC_CRASH");
    assert_eq!(sig.function.as_deref(), Some("tr_commit_transaction"));
    assert_eq!(
        sig.variant,
        "tr_save_draft < -[Feed load:] < __41-[Feed load:]_block_invoke"
    );
    assert_eq!(sig.title(), "EXC_CRASH: tr_commit_transaction");
    assert_eq!(
        sig.culprit().as_deref(),
        Some("tr_commit_transaction (/src/app.c:42)")
    );
}

#[test]
fn a_skip_rule_in_a_user_file_moves_the_site_past_the_apps_own_helpers() {
    let crash = crash(vec![
        app("MyLoggerFatal(char const*, ...)"),
        app("MyLoggerAssert"),
        app("Feed::load(int)"),
        app("Feed::refresh()"),
    ]);
    let report = report("EXC_BREAKPOINT", None, None);
    let builtin = sign(&report, &crash, Rules::builtin_ref());
    assert_eq!(builtin.text, "EXC_BREAKPOINT | MyLoggerFatal");
    let rules = Rules::parse("# our assert helpers\nskip function:MyLogger*\n").unwrap();
    let ours = sign(&report, &crash, &rules);
    assert_eq!(ours.text, "EXC_BREAKPOINT | Feed::load");
    assert_eq!(ours.variant, "Feed::refresh");
}

#[test]
fn the_exception_backtrace_wins_over_the_crashed_thread() {
    let mut crash = crash(vec![
        system("libsystem_kernel.dylib", Some("__pthread_kill")),
        system("libobjc.A.dylib", Some("objc_exception_rethrow")),
        app("main"),
    ]);
    crash.last_exception_backtrace = Some(vec![
        system("CoreFoundation", Some("__exceptionPreprocess")),
        system("libobjc.A.dylib", Some("objc_exception_throw")),
        system(
            "Foundation",
            Some("-[NSAssertionHandler handleFailureInFunction:file:lineNumber:description:]"),
        ),
        app("tr_commit_transaction"),
        app("main"),
    ]);
    let report = report(
        "EXC_CRASH",
        Some("NSInternalInconsistencyException"),
        Some("Transaction 7 was already committed"),
    );
    let sig = sign(&report, &crash, Rules::builtin_ref());
    assert_eq!(
        sig.text,
        "NSInternalInconsistencyException | tr_commit_transaction"
    );
    assert_eq!(sig.variant, "main");
}

#[test]
fn a_stored_crash_record_names_its_exception_from_the_reason() {
    // What the `.crash` parser stored before it read Application Specific Information.
    let report = report(
        "EXC_CRASH",
        None,
        Some("*** Terminating app due to uncaught exception 'NSInternalInconsistencyException', reason: 'done'\n\nabort() called"),
    );
    let sig = sign(
        &report,
        &crash(vec![app("tr_commit_transaction")]),
        Rules::builtin_ref(),
    );
    assert_eq!(
        sig.text,
        "NSInternalInconsistencyException | tr_commit_transaction"
    );
}

#[test]
fn unsymbolicated_in_app_frames_are_image_and_offset_and_stubs_are_skipped() {
    let missing = frame("App", None, FrameStatus::MissingDebugFile, true);
    let sig = sign(
        &report("EXC_BAD_ACCESS", None, None),
        &crash(vec![missing.clone(), app("main")]),
        Rules::builtin_ref(),
    );
    assert_eq!(sig.text, "EXC_BAD_ACCESS | App+0x4000");
    assert_eq!((sig.file, sig.line), (None, None));
    // A linker stub: the debug file is there but has no function at the address.
    let stub = frame("App", None, FrameStatus::Malformed, true);
    let sig = sign(
        &report("EXC_BAD_ACCESS", None, None),
        &crash(vec![stub, app("tr_fire_callback"), app("tr_timer_tick")]),
        Rules::builtin_ref(),
    );
    assert_eq!(sig.text, "EXC_BAD_ACCESS | tr_fire_callback");
    assert_eq!(sig.variant, "tr_timer_tick");
}

#[test]
fn system_only_exceptions_sign_with_their_reason() {
    let range = |index: &str, bounds: &str| {
        report(
            "EXC_CRASH",
            Some("NSRangeException"),
            Some(&format!(
                "*** -[__NSCFString characterAtIndex:]: index {index} beyond bounds [0 .. {bounds}]"
            )),
        )
    };
    let frames = vec![
        system("CoreFoundation", Some("__exceptionPreprocess")),
        system("libobjc.A.dylib", Some("objc_exception_throw")),
        system("CoreFoundation", Some("+[NSException raise:format:]")),
        system("CoreFoundation", Some("-[__NSCFString characterAtIndex:]")),
        system(
            "CoreFoundation",
            Some("__CFRUNLOOP_IS_CALLING_OUT_TO_A_BLOCK__"),
        ),
    ];
    let expected = "NSRangeException | -[__NSCFString characterAtIndex:] | index <n> beyond bounds [<n> .. <n>]";
    let a = sign(
        &range("5", "2"),
        &crash(frames.clone()),
        Rules::builtin_ref(),
    );
    let b = sign(
        &range("17", "9"),
        &crash(frames.clone()),
        Rules::builtin_ref(),
    );
    assert_eq!(a.text, expected);
    assert_eq!(b.text, expected);
    assert_eq!(
        a.title(),
        "NSRangeException: -[__NSCFString characterAtIndex:]"
    );
    assert_eq!(a.variant, "");

    // MetricKit: no names at all; the reason still names the method.
    let unnamed = vec![
        system("CoreFoundation", None),
        system("libobjc.A.dylib", None),
    ];
    assert_eq!(
        sign(
            &range("1", "0"),
            &crash(unnamed.clone()),
            Rules::builtin_ref()
        )
        .text,
        expected
    );

    // Another exception class with a reason of the same shape never joins it.
    let invalid = report(
        "EXC_CRASH",
        Some("NSInvalidArgumentException"),
        Some("-[__NSCFNumber length]: unrecognized selector sent to instance 0x8c3b2a2000"),
    );
    let sig = sign(&invalid, &crash(frames), Rules::builtin_ref());
    assert_eq!(
        sig.text,
        "NSInvalidArgumentException | -[__NSCFNumber length] | unrecognized selector sent to instance <addr>"
    );

    // A reason naming no method: the reason alone, so that MetricKit agrees; the
    // first named frame that is not skipped is still shown.
    let generic = report(
        "EXC_CRASH",
        Some("NSGenericException"),
        Some("*** Collection <__NSArrayM: 0x600003a8c0e0> was mutated while being enumerated."),
    );
    let frames = vec![
        system("CoreFoundation", Some("__exceptionPreprocess")),
        system("libobjc.A.dylib", Some("objc_exception_throw")),
        system("CoreFoundation", Some("__NSFastEnumerationMutationHandler")),
    ];
    let sig = sign(&generic, &crash(frames.clone()), Rules::builtin_ref());
    assert_eq!(
        sig.text,
        "NSGenericException | Collection <__NSArrayM: <addr>> was mutated while being enumerated."
    );
    assert_eq!(
        sig.function.as_deref(),
        Some("__NSFastEnumerationMutationHandler")
    );
    let unnamed_generic = sign(&generic, &crash(unnamed.clone()), Rules::builtin_ref());
    assert_eq!(unnamed_generic.text, sig.text);
    assert_eq!(unnamed_generic.function, None);

    // No language exception: the first named frame past the runtime is the site.
    let frames = vec![
        system("libobjc.A.dylib", Some("objc_msgSend")),
        system("libobjc.A.dylib", Some("objc_release")),
        system("CoreFoundation", Some("_CFRelease")),
    ];
    assert_eq!(
        sign(
            &report("EXC_BAD_ACCESS", None, None),
            &crash(frames),
            Rules::builtin_ref()
        )
        .text,
        "EXC_BAD_ACCESS | objc_release"
    );
    // No name anywhere (MetricKit before the dSYM, when no image is known to be the
    // app's): the first unnamed frame that is not skipped, as image and offset.
    let kernel = system("libsystem_kernel.dylib", None);
    let crashed = report("EXC_BAD_ACCESS", None, None);
    let frames = [vec![kernel.clone()], unnamed].concat();
    assert_eq!(
        sign(&crashed, &crash(frames), Rules::builtin_ref()).text,
        "EXC_BAD_ACCESS | CoreFoundation+0x4000"
    );
    // Nothing at all: the exception alone.
    assert_eq!(
        sign(&crashed, &crash(vec![kernel]), Rules::builtin_ref()).text,
        "EXC_BAD_ACCESS"
    );
}

#[test]
fn app_and_system_rules_decide_what_is_in_app() {
    let crash = crash(vec![
        frame(
            "VendorSDK",
            Some("vendor_log"),
            FrameStatus::Symbolicated,
            true,
        ),
        frame("MyKit", Some("kit_parse"), FrameStatus::OsSymbol, false),
        app("main"),
    ]);
    let report = report("EXC_BAD_ACCESS", None, None);
    assert_eq!(
        sign(&report, &crash, Rules::builtin_ref()).text,
        "EXC_BAD_ACCESS | vendor_log"
    );
    let rules = Rules::parse("system image:VendorSDK\napp image:MyKit").unwrap();
    let sig = sign(&report, &crash, &rules);
    assert_eq!(sig.text, "EXC_BAD_ACCESS | kit_parse");
    // A name from the report, not a debug file: no file or line to show.
    assert_eq!(sig.culprit().as_deref(), Some("kit_parse"));
}

#[test]
fn control_characters_never_reach_a_signature() {
    let mut report = report("EXC_BAD_ACCESS\u{1b}", None, None);
    report.exception.signal = None;
    let sig = sign(
        &report,
        &crash(vec![app("evil\u{0}name\u{8}")]),
        Rules::builtin_ref(),
    );
    for text in [&sig.text, &sig.exception, sig.function.as_ref().unwrap()] {
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
}
