use super::*;

fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("{text:?}: line {}: {}", e.line, e.message))
}

fn value(text: &str, key: &str) -> Value {
    ok(text)
        .get(key)
        .map(|s| s.value.clone())
        .unwrap_or(Value::None)
}

fn refused(text: &str) -> (usize, String) {
    match parse(text) {
        Ok(c) => panic!("{text:?} parsed: {c:?}"),
        Err(e) => (e.line, e.message),
    }
}

fn s(text: &str) -> Value {
    Value::Str(text.to_string())
}

fn list(values: &[(Value, usize)]) -> Value {
    Value::List(
        values
            .iter()
            .map(|(value, line)| Item {
                value: value.clone(),
                line: *line,
            })
            .collect(),
    )
}

#[test]
fn settings_keep_their_lines_and_values() {
    let c = ok("# a domain\n\nname = \"web1\"\nmemory=512\nvcpus = 2 # two\ntype='pv'\n");
    let found: Vec<(&str, &Value, usize)> = c
        .settings
        .iter()
        .map(|s| (s.key.as_str(), &s.value, s.line))
        .collect();
    assert_eq!(
        found,
        [
            ("name", &s("web1"), 3),
            ("memory", &Value::Int(512), 4),
            ("vcpus", &Value::Int(2), 5),
            ("type", &s("pv"), 6),
        ]
    );
    assert!(c.repeats.is_empty());
}

#[test]
fn numbers_are_decimal_hex_octal_and_may_be_negative() {
    for (text, n) in [
        ("0", 0),
        ("512", 512),
        ("0x200", 512),
        ("0X1f", 31),
        ("010", 8),
        ("0o17", 15),
        ("-3600", -3600),
        ("-0x10", -16),
    ] {
        assert_eq!(
            value(&format!("k = {text}\n"), "k"),
            Value::Int(n),
            "{text}"
        );
    }
    let (line, message) = refused("a = 1\nk = 1.5\n");
    assert_eq!((line, message.as_str()), (2, "`1.5` is not a whole number"));
    assert_eq!(refused("k = 08\n").1, "`08` is not a number");
    assert_eq!(refused("k = 12abc\n").1, "`12abc` is not a number");
}

#[test]
fn strings_in_every_quoting_with_escapes() {
    assert_eq!(value("k = 'single'", "k"), s("single"));
    assert_eq!(value("k = \"dou'ble\"", "k"), s("dou'ble"));
    assert_eq!(value(r#"k = "a\"b\\c\td\x41\101""#, "k"), s("a\"b\\c\tdAA"));
    // Python keeps an escape it does not know.
    assert_eq!(value(r#"k = "C:\dir""#, "k"), s("C:\\dir"));
    assert_eq!(value("k = '# not a comment'", "k"), s("# not a comment"));
    let c = ok("extra = '''console=hvc0\n  root=/dev/xvda1 'ro' \"\"'''\nname = \"\"\"x\"\"\"\n");
    assert_eq!(
        c.get("extra").map(|s| &s.value),
        Some(&s("console=hvc0\n  root=/dev/xvda1 'ro' \"\""))
    );
    // Lines are counted through a triple-quoted string.
    assert_eq!(c.get("name").map(|s| s.line), Some(3));
    assert_eq!(value("k = \"\"", "k"), s(""));
    assert_eq!(value("k = ''''''", "k"), s(""));
}

#[test]
fn python_constants_are_values_and_none_is_unset() {
    let c = ok("a = True\nb = False\nc = None\n");
    assert_eq!(c.get("a").map(|s| &s.value), Some(&Value::Bool(true)));
    assert_eq!(c.get("b").map(|s| &s.value), Some(&Value::Bool(false)));
    assert_eq!(c.get("c"), None);
    assert_eq!(Value::Bool(true).as_int(), Some(1));
    assert_eq!(s(" 512 ").as_int(), Some(512));
    assert_eq!(s("0").as_bool(), Some(false));
    assert_eq!(s("yes").as_bool(), None);
}

#[test]
fn lists_span_lines_nest_hold_comments_and_trailing_commas() {
    let text = "disk = [\n  'phy:/dev/vg/a,xvda,w',  # root\n\n  \"file:/b,xvdb,w\",\n]\nvnuma = [ [\"pnode=0\", \"size=512\"], [] ]\nempty = []\n";
    let c = ok(text);
    assert_eq!(
        c.get("disk").map(|s| &s.value),
        Some(&list(&[
            (s("phy:/dev/vg/a,xvda,w"), 2),
            (s("file:/b,xvdb,w"), 4)
        ]))
    );
    assert_eq!(
        c.get("vnuma").map(|s| &s.value),
        Some(&list(&[
            (list(&[(s("pnode=0"), 6), (s("size=512"), 6)]), 6),
            (list(&[]), 6),
        ]))
    );
    assert_eq!(c.get("empty").map(|s| &s.value), Some(&list(&[])));
    assert_eq!(c.get("empty").map(|s| s.line), Some(7));
}

#[test]
fn semicolons_end_statements() {
    let c = ok("name=\"h0\"; type=\"hvm\";\nmemory = 64;\n");
    assert_eq!(c.settings.len(), 3);
    assert_eq!(c.get("type").map(|s| s.line), Some(1));
    assert_eq!(c.get("memory").map(|s| &s.value), Some(&Value::Int(64)));
}

#[test]
fn the_last_of_a_repeated_key_wins_and_is_recorded() {
    let c = ok("memory = 256\nname = 'a'\nmemory = 512\n");
    assert_eq!(
        c.get("memory").map(|s| (&s.value, s.line)),
        Some((&Value::Int(512), 3))
    );
    assert_eq!(
        c.repeats,
        [Repeat {
            key: "memory".into(),
            line: 3,
            replaced: 1
        }]
    );
}

#[test]
fn append_adds_to_strings_and_lists() {
    let c = ok("extra = 'a'\nextra += ' b'\nvif = ['x']\nvif += ['y']\nnew += 'z'\n");
    assert_eq!(c.get("extra").map(|s| &s.value), Some(&s("a b")));
    assert_eq!(
        c.get("vif").map(|s| &s.value),
        Some(&list(&[(s("x"), 3), (s("y"), 4)]))
    );
    assert_eq!(c.get("new").map(|s| &s.value), Some(&s("z")));
    assert!(c.repeats.is_empty());
    let (line, message) = refused("extra = 'a'\nextra += ['b']\n");
    assert_eq!(line, 2);
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn an_unterminated_string_names_the_line_it_starts_on() {
    for (text, line) in [
        ("name = 'web1\nmemory = 5\n", 1),
        ("a = 1\n\nextra = \"root=/dev/xvda1\n", 3),
        ("a = 1\nextra = '''never\nclosed\n", 2),
        ("a = 'ends with a backslash\\", 1),
        ("disk = ['phy:/dev/a,xvda,w',\n 'file:/b,xvdb,w]\n", 2),
    ] {
        assert_eq!(
            refused(text),
            (line, "unterminated string".to_string()),
            "{text:?}"
        );
    }
}

#[test]
fn an_unbalanced_list_names_its_opening_line() {
    let (line, message) =
        refused("name = 'a'\ndisk = [ 'phy:/dev/a,xvda,w',\n  'file:/b,xvdb,w'\nvif = [ '' ]\n");
    assert_eq!(line, 2);
    assert_eq!(
        message,
        "unterminated list: the `[` of `disk` has no `]` before `vif =` on line 4"
    );
    let (line, message) = refused("name = 'a'\ndisk = [ 'x',\n");
    assert_eq!(line, 2);
    assert!(message.ends_with("before the end of the file"), "{message}");
    let (line, message) = refused("name = 'a'\nvif = [ '' ]]\n");
    assert_eq!(line, 2);
    assert!(message.contains("closes no list"), "{message}");
    assert_eq!(
        refused("]\n"),
        (1, "`]` without a `[` before it".to_string())
    );
    let (line, message) = refused("disk = [ 'a' 'b' ]\n");
    assert_eq!(line, 1);
    assert!(message.starts_with("expected `,` or `]`"), "{message}");
}

#[test]
fn python_code_and_expressions_are_refused_at_their_line() {
    let (line, message) = refused("import os\nname = 'a'\n");
    assert_eq!(line, 1);
    assert!(message.starts_with("`import` is Python code"), "{message}");
    for text in ["from os import path", "if True:", "def f():", "print('x')"] {
        let (_, message) = refused(text);
        assert!(message.contains("is Python code"), "{text}: {message}");
    }
    let (line, message) = refused("name = 'a'\nmemory = 256 * 2\n");
    assert_eq!(line, 2);
    assert_eq!(
        message,
        "`*` after the value of `memory`: only KEY = VALUE is read, not a Python \
         expression; write the value itself"
    );
    for (text, found) in [
        ("name = 'web' + suffix", "`+`"),
        ("memory = 512 - 256", "`-`"),
        ("memory = 512 -256", "the number -256"),
        ("name = 'a' 'b'", "a string"),
        ("kernel = '/boot/vmlinuz-%s' % version", "`%`"),
        ("name = 'a'.upper()", "`.`"),
    ] {
        let (_, message) = refused(text);
        assert!(message.starts_with(found), "{text}: {message}");
    }
    let (line, message) = refused("\n\nmemory = int('512')\n");
    assert_eq!(line, 3);
    assert!(message.starts_with("`int` is not a value"), "{message}");
    let (_, message) = refused("name = os.environ['NAME']");
    assert!(message.starts_with("`os` is not a value"), "{message}");
}

#[test]
fn bad_lines_say_what_was_expected() {
    assert_eq!(
        refused("name = 'a'\nmemory 512\n"),
        (
            2,
            "expected `=` after `memory`, found the number 512".to_string()
        )
    );
    assert_eq!(
        refused("memory\n"),
        (
            1,
            "expected `=` after `memory`, found the end of the line".to_string()
        )
    );
    assert_eq!(
        refused("memory =\nvcpus = 1\n"),
        (1, "`memory =` has no value".to_string())
    );
    assert_eq!(
        refused("= 5\n"),
        (1, "expected a setting (KEY = VALUE), found `=`".to_string())
    );
    assert_eq!(
        refused("a = 1\n  'loose string'\n"),
        (
            2,
            "expected a setting (KEY = VALUE), found a string".to_string()
        )
    );
    let (line, message) = refused("extra = \"root=/dev/xvda1 \" \\\n  \"ro\"\n");
    assert_eq!(line, 1);
    assert!(
        message.starts_with("`\\` after the value of `extra`"),
        "{message}"
    );
}
