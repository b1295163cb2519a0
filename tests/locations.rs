//! `[[server.location]]`: nginx's matching rules, `return`, `try_files`,
//! per-location settings, CGI inside a location.

mod common;

use common::*;
use std::io::Write;

/// One config mixing every match kind; each location answers its own
/// name (`return 200 "<name>"`), so the table shows which one won.
#[test]
fn location_precedence() {
    let locs = [
        ("prefix-root", "/"),
        ("exact-root", "= /"),
        ("images", "/images/"),
        ("static-stop", "^~ /static/"),
        ("img-regex", "~* \\\\.(gif|jpg|png)$"),
        ("css-regex", "~ ^/static/.*\\\\.css$"),
        ("docs", "/documents/"),
        ("docs-year", "~ ^/documents/(?<year>\\\\d{4})/(.*)$"),
        ("exact-login", "= /login"),
        ("app", "/app"),
    ];
    let mut more = String::new();
    for (name, m) in locs {
        let text = if name == "docs-year" {
            "docs-year $year $2"
        } else {
            name
        };
        more += &format!("[[server.location]]\nmatch = \"{m}\"\nreturn = \"200 {text}\"\n\n");
    }
    let s = Server::with(Opts {
        more,
        ..Opts::default()
    });
    for (uri, want) in [
        ("/", "exact-root"),
        ("/index.html", "prefix-root"),
        ("/images/a.txt", "images"),
        ("/images/a.GIF", "img-regex"),
        ("/static/a.png", "static-stop"),
        ("/static/a.css", "static-stop"),
        ("/documents/x.jpg", "img-regex"),
        ("/documents/2024/q/report", "docs-year 2024 q/report"),
        ("/documents/old", "docs"),
        ("/login", "exact-login"),
        ("/login/x", "prefix-root"),
        ("/application", "app"),
        ("/a/../images/%61.txt", "images"),
    ] {
        let r = s.get(uri);
        assert_eq!((r.status, r.text().as_str()), (200, want), "{uri}");
    }
}

#[test]
fn return_redirects_and_texts() {
    let s = Server::with(Opts {
        server: "server_name = \"example.test\"\nerror_page = { 404 = \"/private/x\" }".into(),
        more: "[[server.location]]\nmatch = \"/old/\"\nreturn = \"301 https://$host$request_uri\"\n\n\
               [[server.location]]\nmatch = \"~ ^/user/(?<name>[a-z]+)$\"\nreturn = \"302 /profile?u=$name\"\n\n\
               [[server.location]]\nmatch = \"= /health\"\nreturn = \"200 ok $remote_addr\"\n\n\
               [[server.location]]\nmatch = \"/private/\"\nreturn = 403\n\n\
               [[server.location]]\nmatch = \"/drop\"\nreturn = 444\n\n\
               [[server.location]]\nmatch = \"~ (?s)^/inject/(.*)$\"\nreturn = \"302 /x/$1\"\n\n\
               [[server.location]]\nmatch = \"= /away\"\nreturn = \"302 //evil.example/x\"\n\n\
               [[server.location]]\nmatch = \"= /none\"\nreturn = 204\n\n\
               [[server.location]]\nmatch = \"= /same\"\nreturn = 304\n\n\
               [[server.location]]\nmatch = \"= /empty\"\nreturn = 200\n\n\
               [[server.location]]\nmatch = \"= /gone\"\nreturn = \"404 not here\"\n"
            .into(),
        ..Opts::default()
    });
    let r = s.request("GET /old/page?a=1 HTTP/1.1\r\nHost: Example.Test\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://example.test/old/page?a=1"));
    let r = s.get("/user/ann");
    let at = |p: &str| format!("http://localhost:{}{p}", s.port);
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some(at("/profile?u=ann").as_str()))
    );
    let r = s.get("/health");
    assert_eq!((r.status, r.text().as_str()), (200, "ok 127.0.0.1"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(s.get("/private/x").status, 403);
    assert!(
        s.raw(b"GET /drop HTTP/1.1\r\nHost: a\r\n\r\n").is_empty(),
        "444 closes without a response"
    );
    // A decoded CR LF in a capture never splits the Location header.
    let out = s.raw(b"GET /inject/a%0d%0aSet-Cookie:%20x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("\r\nSet-Cookie"), "{text}");
    assert!(text.contains("/x/a%0D%0ASet-Cookie: x=1\r\n"), "{text}");
    // A path-only Location gets the scheme and host: "//host" cannot send a browser away.
    let r = s.get("/away");
    assert_eq!(r.header("location"), Some(at("//evil.example/x").as_str()));
    // 204 and 304 end at their head; a 200 without text is empty; a text is not replaced by error_page.
    let mut c = s.connect();
    c.write_all(b"GET /none HTTP/1.1\r\nHost: a\r\n\r\nGET /same HTTP/1.1\r\nHost: a\r\n\r\nGET /empty HTTP/1.1\r\nHost: a\r\n\r\nGET /gone HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = read_to_close(&mut c);
    let rs = parse_responses(&out, false);
    let got: Vec<(u16, String)> = rs.iter().map(|r| (r.status, r.text())).collect();
    assert_eq!(
        got,
        [
            (204, String::new()),
            (304, String::new()),
            (200, String::new()),
            (404, "not here".to_string())
        ],
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(rs[0].header("content-length").is_none() && rs[0].header("content-type").is_none());
}

/// A PHP-style front controller: existing files are served, everything
/// else goes to the script with the original query and REQUEST_URI.
#[test]
fn try_files_to_a_front_controller() {
    let s = Server::with(Opts {
        more: "[[server.location]]\nmatch = \"/\"\ntry_files = [\"$uri\", \"$uri/\", \"/app.cgi?$query_string\"]\n\n\
               [[server.location]]\nmatch = \"~ \\\\.cgi$\"\ncgi = { extensions = [\".cgi\"] }\n\n\
               [[server.location]]\nmatch = \"/strict/\"\ntry_files = [\"$uri\", \"=404\"]\n\n\
               [[server.location]]\nmatch = \"/app/\"\ncgi = { dir = \"/tmp\" }\n"
            .into(),
        ..Opts::default()
    });
    write_script(
        &s.root.join("app.cgi"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho \"uri=$REQUEST_URI qs=$QUERY_STRING script=$SCRIPT_NAME method=$REQUEST_METHOD\"\n",
    );
    std::fs::write(s.root.join("real.txt"), "real file\n").unwrap();
    std::fs::create_dir_all(s.root.join("dir")).unwrap();
    std::fs::write(s.root.join("dir/index.html"), "dir index\n").unwrap();
    std::fs::create_dir_all(s.root.join("strict")).unwrap();
    std::fs::write(s.root.join("strict/here.txt"), "here\n").unwrap();
    assert_eq!(s.get("/real.txt").text(), "real file\n");
    assert_eq!(s.get("/dir/").text(), "dir index\n");
    // "$uri/" finding a directory asked without its slash: nginx's 301, not the index at /dir.
    let r = s.get("/dir?a=1");
    let at = |p: &str| format!("http://localhost:{}{p}", s.port);
    assert_eq!((r.status, r.header("location")), (301, Some(at("/dir/?a=1").as_str())));
    // An application location "/app/" asked as "/app": 301 to "/app/", as nginx's *_pass locations.
    let r = s.get("/app?x=1");
    assert_eq!((r.status, r.header("location")), (301, Some(at("/app/?x=1").as_str())));
    let r = s.get("/blog/2024/post?page=2&x=%20y");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "uri=/blog/2024/post?page=2&x=%20y qs=page=2&x=%20y script=/app.cgi method=GET\n"
    );
    // POST keeps its method and body through the internal redirect.
    let r = s.request("POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc");
    assert_eq!(r.text(), "uri=/form qs= script=/app.cgi method=POST\n");
    assert_eq!(s.get("/strict/here.txt").text(), "here\n");
    assert_eq!(s.get("/strict/missing").status, 404);
    let log = s.access_log();
    assert!(
        eventually(std::time::Duration::from_secs(3), || s
            .access_log()
            .contains("\"GET /blog/2024/post?page=2&x=%20y HTTP/1.1\" 200")),
        "the access log has the request as sent: {log}"
    );
}

/// A location's own root, index, autoindex, charset and deny_hidden; the
/// rest inherited from the server.
#[test]
fn location_settings_override_the_server() {
    let s = Server::start();
    let other = s.dir.path().join("other");
    std::fs::create_dir_all(other.join("assets/list")).unwrap();
    std::fs::write(other.join("assets/start.htm"), "start\n").unwrap();
    std::fs::write(other.join("assets/.hidden"), "dot\n").unwrap();
    std::fs::write(other.join("assets/list/a.txt"), "a\n").unwrap();
    std::fs::write(s.root.join("page.txt"), "server root\n").unwrap();
    let s = Server::with_root(
        Opts {
            more: format!(
                "[[server.location]]\nmatch = \"/assets/\"\nroot = \"{}\"\nindex = \"start.htm\"\nautoindex = true\ncharset = \"off\"\ndeny_hidden = false\n",
                other.display()
            ),
            ..Opts::default()
        },
        TempDir::new(),
        s.root.clone(),
    );
    assert_eq!(s.get("/page.txt").text(), "server root\n");
    assert_eq!(
        s.get("/page.txt").header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let r = s.get("/assets/");
    assert_eq!((r.status, r.text().as_str()), (200, "start\n"));
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert!(
        s.get("/assets/list/").text().contains("a.txt"),
        "autoindex in the location"
    );
    assert_eq!(s.get("/assets/.hidden").text(), "dot\n", "deny_hidden off here");
    assert_eq!(s.get("/.hidden").status, 404);
}

/// nginx's named locations: reached by `try_files`, `error_page` (and an
/// application's X-Accel-Redirect) with the URI unchanged, never by a path.
#[test]
fn named_locations() {
    let s = Server::with(Opts {
        more: r#"
[[server.location]]
match = "/"
try_files = ["$uri", "@front"]
error_page = { 403 = "@denied" }

[[server.location]]
match = "/private/"
deny = ["all"]
error_page = { 403 = "@denied" }

[[server.location]]
match = "@front"
return = "200 front controller for $uri?$args"

[[server.location]]
match = "@denied"
return = "200 denied page for $request_method $uri"
"#
        .into(),
        ..Opts::default()
    });
    std::fs::write(s.root.join("real.txt"), "a real file\n").unwrap();
    assert_eq!(s.get("/real.txt").text(), "a real file\n");
    let r = s.get("/blog/post-1?page=2");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "front controller for /blog/post-1?page=2"),
        "the URI is unchanged in a named location"
    );
    // error_page keeps the error's status, the page comes from the named location.
    let r = s.get("/private/x");
    assert_eq!((r.status, r.text().as_str()), (403, "denied page for GET /private/x"));
    // To a named location, error_page keeps the method (to a URI it is a GET).
    let r = s.request("POST /private/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (403, "denied page for POST /private/x"));
    // A client cannot ask for a named location by path.
    let r = s.get("/@front");
    assert_eq!(
        r.text(),
        "front controller for /@front?",
        "served by `/` as a missing file"
    );
}

#[test]
fn location_config_errors() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let cfg = dir.path().join("c.toml");
    for (loc, want) in [
        ("match = \"~ (unclosed\"", "regex \"(unclosed\" does not compile"),
        ("match = \"images/\"", "must start with \"/\""),
        ("root = \"www\"", "every location needs a `match`"),
        (
            "match = \"/\"\ntry_files = [\"$uri\"]",
            "needs the files to try and a final fallback",
        ),
        (
            "match = \"/\"\ntry_files = [\"$uri\", \"$nope\"]",
            "unknown variable \"$nope\"",
        ),
        (
            "match = \"/\"\ntry_files = [\"$uri\", \"index.php\"]",
            "must be a URI starting with",
        ),
        ("match = \"/x/\"\nreturn = \"301\"", "needs the URL"),
        ("match = \"/x/\"\nreturn = \"700\"", "not a status code"),
        ("match = \"~ ^/a/(.*)$\"\nreturn = \"302 /$2\"", "no capture 2"),
        ("match = \"= /x\"\ncgi = { dir = \"www\" }", "needs a prefix location"),
        ("match = \"/x/\"\nfoo = 1", "unknown field `foo`"),
        (
            "match = \"/x/\"\nrewrite = [[\"^/x\", \"/y\", \"sometimes\"]]",
            "unknown flag \"sometimes\"",
        ),
        (
            "match = \"/x/\"\nrewrite = [[\"^/x(\", \"/y\"]]",
            "regex \"^/x(\" does not compile",
        ),
        (
            "match = \"/x/\"\nerror_page = { 404 = \"page.html\" }",
            "must be a URI starting with",
        ),
        (
            "match = \"/x/\"\nallow = [\"10.0.0.1/8\"]",
            "bits set past its /8 prefix",
        ),
        ("match = \"/x/\"\nexpires = \"soon\"", "is not a time"),
        (
            "match = \"/x/\"\nauth_basic = \"r\"\nauth_basic_user_file = \"/nonexistent/htpasswd\"",
            "cannot read /nonexistent/htpasswd",
        ),
        ("match = \"/x/\"\nauth_basic = \"r\"", "needs `auth_basic_user_file`"),
        (
            "match = \"/\"\ntry_files = [\"$uri\", \"@nowhere\"]",
            "no named location \"@nowhere\" in this server",
        ),
        (
            "match = \"/\"\nerror_page = { 404 = \"@gone\" }",
            "location.error_page: no named location \"@gone\"",
        ),
        ("match = \"@\"", "a named location is \"@\" and a name"),
        (
            "match = \"@a\"\nreturn = \"204\"\n[[server.location]]\nmatch = \"@a\"\nreturn = \"204\"",
            "duplicate location \"@a\"",
        ),
    ] {
        std::fs::write(
            &cfg,
            format!("[[server]]\nroot = \"www\"\n\n[[server.location]]\n{loc}\n"),
        )
        .unwrap();
        let (code, out) = run_corral(&["-t", "-c", cfg.to_str().unwrap()]);
        assert_ne!(code, 0, "{loc}");
        assert!(out.contains(want), "{loc}: {out}");
        assert!(out.contains("c.toml:"), "names the file and line: {out}");
    }
    for (text, want) in [
        (
            "[[server]]\nroot = \"www\"\nserver_name = \"~^(api\"\n",
            "regex \"^(api\" does not compile",
        ),
        (
            "[[server]]\nroot = \"www\"\nserver_name = \"www.*.org\"\n",
            "server.server_name",
        ),
        (
            "[[server]]\nroot = \"www\"\ndefault_server = true\n[[server]]\nroot = \"www\"\ndefault_server = true\n",
            ":6: server.default_server: a second default server",
        ),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let (code, out) = run_corral(&["-t", "-c", cfg.to_str().unwrap()]);
        assert_ne!(code, 0, "{text}");
        assert!(out.contains(want), "{text}: {out}");
    }
}

/// add_header on 2xx/3xx (and every status with `always`), a location's
/// list replacing the server's, expires, default_type, CGI responses too.
#[test]
fn added_headers_expires_and_default_type() {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    let cgi = dir.path().join("cgi");
    for d in [root.join("assets"), root.join("nocache"), cgi.clone()] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(root.join("index.html"), "hi\n").unwrap();
    std::fs::write(root.join("README"), "no extension\n").unwrap();
    std::fs::write(root.join("assets/a.css"), "a{}\n").unwrap();
    std::fs::write(root.join("nocache/n.txt"), "n\n").unwrap();
    write_script(
        &cgi.join("hi.sh"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nhi\\n'\n",
    );
    let s = Server::with_root(
        Opts {
            server: "add_header = { X-Frame-Options = \"DENY\", X-Always = { value = \"yes\", always = true } }\n\
                     default_type = \"text/plain\""
                .into(),
            more: format!(
                "[[server.location]]\nmatch = \"/assets/\"\nexpires = \"30d\"\nadd_header = {{ Cache-Tag = \"assets\" }}\n\n\
                 [[server.location]]\nmatch = \"/nocache/\"\nexpires = \"epoch\"\n\n\
                 [[server.location]]\nmatch = \"/cgi-bin/\"\ncgi = {{ dir = \"{}\" }}\n",
                cgi.display()
            ),
            ..Opts::default()
        },
        dir,
        root,
    );
    let r = s.get("/");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-always"), Some("yes"));
    let r = s.get("/missing");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-frame-options"), None, "not on a 404");
    assert_eq!(r.header("x-always"), Some("yes"), "always: on every status");
    assert_eq!(
        s.get("/README").header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let r = s.get("/assets/a.css");
    assert_eq!(r.header("cache-tag"), Some("assets"));
    assert_eq!(
        r.header("x-frame-options"),
        None,
        "a location's add_header replaces the server's"
    );
    assert_eq!(r.header("cache-control"), Some("max-age=2592000"));
    let expires = httpdate::parse_http_date(r.header("expires").unwrap()).unwrap();
    let left = expires.duration_since(std::time::SystemTime::now()).unwrap().as_secs();
    assert!((2_591_000..=2_592_001).contains(&left), "{left}");
    let r = s.get("/nocache/n.txt");
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("expires"), Some("Thu, 01 Jan 1970 00:00:01 GMT"));
    let r = s.get("/cgi-bin/hi.sh");
    assert_eq!((r.status, r.text().as_str()), (200, "hi\n"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "CGI responses get them too");
}

/// allow / deny by IPv4 and IPv6 address and CIDR, first match wins, per
/// server and per location; `return` comes before access, as in nginx.
#[test]
fn allow_and_deny_by_address() {
    let s = Server::with(Opts {
        server: "listen = [\"127.0.0.1:{port}\", \"[::1]:{port}\"]\ndeny = [\"127.0.0.3\"]".into(),
        more: "[[server.location]]\nmatch = \"/admin/\"\nallow = [\"127.0.0.2/32\", \"::1\"]\n\n\
               [[server.location]]\nmatch = \"/lan/\"\naccess = [\"deny 127.0.0.4\", \"allow 127.0.0.0/29\", \"deny all\"]\n\n\
               [[server.location]]\nmatch = \"= /ping\"\naccess = [\"deny all\"]\nreturn = \"200 pong\"\n"
            .into(),
        ..Opts::default()
    });
    std::fs::create_dir_all(s.root.join("admin")).unwrap();
    std::fs::write(s.root.join("admin/i.txt"), "admin\n").unwrap();
    std::fs::create_dir_all(s.root.join("lan")).unwrap();
    std::fs::write(s.root.join("lan/i.txt"), "lan\n").unwrap();
    let p = s.port;
    assert_eq!(status_from("127.0.0.1", p, "/"), 200);
    assert_eq!(status_from("127.0.0.3", p, "/"), 403, "server deny");
    assert_eq!(status_from("127.0.0.2", p, "/admin/i.txt"), 200);
    assert_eq!(
        status_from("127.0.0.1", p, "/admin/i.txt"),
        403,
        "allow alone denies the rest"
    );
    assert_eq!(status_from("::1", p, "/admin/i.txt"), 200, "IPv6");
    assert_eq!(
        status_from("127.0.0.3", p, "/admin/i.txt"),
        403,
        "the location's rules replace the server's"
    );
    assert_eq!(status_from("127.0.0.5", p, "/lan/i.txt"), 200);
    assert_eq!(status_from("127.0.0.4", p, "/lan/i.txt"), 403, "first match wins");
    assert_eq!(status_from("127.0.0.9", p, "/lan/i.txt"), 403, "outside the /29");
    assert_eq!(status_from("::1", p, "/lan/i.txt"), 403);
    assert_eq!(status_from("127.0.0.1", p, "/ping"), 200, "return runs before access");
    assert!(s.error_log().contains("access forbidden by rule, client: 127.0.0.3"));
}

/// error_page: to a static page (status kept), several statuses at once,
/// `=code`, `=` (the page's own status), to a script, to a URL; a missing
/// page falls back to the built-in one without looping.
#[test]
fn error_pages() {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    let cgi = dir.path().join("cgi");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&cgi).unwrap();
    std::fs::write(root.join("404.html"), "custom 404\n").unwrap();
    std::fs::write(root.join("50x.html"), "custom 50x\n").unwrap();
    std::fs::write(root.join("empty.txt"), "").unwrap();
    write_script(
        &cgi.join("oops.sh"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nscript page for %s %s\\n' \"$REQUEST_METHOD\" \"$REQUEST_URI\"\n",
    );
    let s = Server::with_root(
        Opts {
            server: "error_page = { 404 = \"/404.html\", \"500 502 503 504\" = \"/50x.html\" }".into(),
            more: format!(
                "[[server.location]]\nmatch = \"/down\"\nreturn = 503\n\n\
                 [[server.location]]\nmatch = \"/soft/\"\nerror_page = {{ 404 = \"=200 /empty.txt\" }}\n\n\
                 [[server.location]]\nmatch = \"/own/\"\nerror_page = {{ 404 = \"= /empty.txt\" }}\n\n\
                 [[server.location]]\nmatch = \"/scripted/\"\nerror_page = {{ \"404 405\" = \"/cgi-bin/oops.sh\" }}\n\n\
                 [[server.location]]\nmatch = \"/cgi-bin/\"\ncgi = {{ dir = \"{}\" }}\n\n\
                 [[server.location]]\nmatch = \"/gone/\"\nerror_page = {{ 404 = \"=301 https://example.org/new\" }}\n\n\
                 [[server.location]]\nmatch = \"/loop/\"\nerror_page = {{ 404 = \"/loop/missing.html\" }}\n\n\
                 [[server.location]]\nmatch = \"/e/\"\nerror_page = {{ 404 = \"/r302\" }}\n\n\
                 [[server.location]]\nmatch = \"/g/\"\nerror_page = {{ 404 = \"/deny\" }}\n\n\
                 [[server.location]]\nmatch = \"= /r302\"\nreturn = \"302 https://example.net/\"\n\n\
                 [[server.location]]\nmatch = \"= /deny\"\nreturn = 403\n\n\
                 [[server.location]]\nmatch = \"/m/\"\nerror_page = {{ 404 = \"=200 /nothere.html\" }}\n\n\
                 [[server.location]]\nmatch = \"/n/\"\nerror_page = {{ 404 = \"=301 /nothere.html\" }}\n",
                cgi.display()
            ),
            ..Opts::default()
        },
        dir,
        root,
    );
    let r = s.get("/nothing-here");
    assert_eq!((r.status, r.text().as_str()), (404, "custom 404\n"));
    // The client's ranges and preconditions were about what it asked for,
    // not the page: a plain 404 (never a 304 telling a cache its copy of a
    // deleted URL is still good, nor a 206/416 of the page).
    for h in [
        "Range: bytes=0-3",
        "Range: bytes=0-1,4-5",
        "Range: bytes=500-",
        "If-None-Match: *",
        "If-Modified-Since: Thu, 01 Jan 2099 00:00:00 GMT",
        "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:01 GMT",
        "If-Match: \"nope\"",
    ] {
        let r = s.request(&format!(
            "GET /nothing-here HTTP/1.1\r\nHost: a\r\n{h}\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!((r.status, r.text().as_str()), (404, "custom 404\n"), "{h}");
        assert!(r.header("content-range").is_none(), "{h}");
    }
    let r = s.get("/down");
    assert_eq!((r.status, r.text().as_str()), (503, "custom 50x\n"));
    let r = s.get("/soft/missing");
    assert_eq!((r.status, r.text().as_str()), (200, ""));
    let r = s.get("/own/missing");
    assert_eq!(r.status, 200, "= takes the page's own status");
    std::fs::create_dir_all(s.root.join("scripted")).unwrap();
    std::fs::write(s.root.join("scripted/x"), "x").unwrap();
    let r = s.request("POST /scripted/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi");
    assert_eq!(
        r.status, 405,
        "the static handler refuses POST to a file; the page keeps that status"
    );
    assert_eq!(r.text(), "script page for GET /scripted/x\n");
    // As nginx: POST to a missing file is a 404, to a directory without its slash a 301.
    let r = s.request("POST /scripted/none HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi");
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, "script page for GET /scripted/none\n")
    );
    let r = s.request("POST /scripted HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi");
    assert_eq!(r.status, 301);
    let r = s.get("/scripted/y");
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, "script page for GET /scripted/y\n")
    );
    let r = s.get("/gone/x");
    assert_eq!((r.status, r.header("location")), (301, Some("https://example.org/new")));
    let r = s.get("/loop/x");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("404 Not Found"), "the built-in page: {}", r.text());
    // The page location's own redirect or error is answered as itself (nginx).
    let r = s.get("/e/x");
    assert_eq!((r.status, r.header("location")), (302, Some("https://example.net/")));
    let r = s.get("/g/x");
    assert_eq!(r.status, 403, "404 -> /deny -> its own 403");
    // A missing page is a 404 whatever `=code` asked: never a 200 or a
    // 301 without Location over the built-in 404 page.
    let r = s.get("/m/x");
    assert_eq!(r.status, 404);
    let r = s.get("/n/x");
    assert_eq!((r.status, r.header("location")), (404, None));
}

/// rewrite with nginx's flags: none (go on, then choose the location
/// again), last, break, redirect, permanent; queries appended or dropped;
/// a cycle ends in 500.
#[test]
fn rewrites() {
    let s = Server::with(Opts {
        server: "rewrite = [[\"^/old/(.*)$\", \"/new/$1\"], [\"^/old-int$\", \"/int/y\"]]".into(),
        more: "[[server.location]]\nmatch = \"/new/\"\nreturn = \"200 new $uri $args\"\n\n\
               [[server.location]]\nmatch = \"/a/\"\nrewrite = [[\"^/a/(?<rest>.*)$\", \"/b/${rest}\", \"last\"], [\"^/b/\", \"/never\"]]\n\n\
               [[server.location]]\nmatch = \"/b/\"\nreturn = \"200 b $uri\"\n\n\
               [[server.location]]\nmatch = \"/c/\"\nrewrite = [[\"^/c/(.*)$\", \"/real/$1\", \"break\"]]\n\n\
               [[server.location]]\nmatch = \"/real/\"\nreturn = \"200 not via break\"\n\n\
               [[server.location]]\nmatch = \"/moved/\"\nrewrite = [[\"^/moved/(.*)$\", \"/here/$1?from=moved\", \"permanent\"]]\n\n\
               [[server.location]]\nmatch = \"/tmp/\"\nrewrite = [[\"^/tmp/(.*)$\", \"/there/$1?\", \"redirect\"]]\n\n\
               [[server.location]]\nmatch = \"/ext/\"\nrewrite = [[\"^/ext/(.*)$\", \"https://example.org/$1\"]]\n\n\
               [[server.location]]\nmatch = \"/loop\"\nrewrite = [[\"^/loop\", \"/loop\", \"last\"]]\n\n\
               [[server.location]]\nmatch = \"/q/\"\nrewrite = [[\"^/q/(.*)$\", \"/new/x-$1?k=$1\", \"last\"]]\n\n\
               [[server.location]]\nmatch = \"/p/\"\nrewrite = [[\"^/p/(.*)$\", \"/new/y-$1\", \"last\"]]\n\n\
               [[server.location]]\nmatch = \"/enc/\"\nrewrite = [[\"^/enc/(.*)$\", \"/to/$1\", \"redirect\"]]\n\n\
               [[server.location]]\nmatch = \"/int/\"\ninternal = true\nreturn = \"200 internal $uri\"\n"
            .into(),
        ..Opts::default()
    });
    std::fs::create_dir_all(s.root.join("real")).unwrap();
    std::fs::write(s.root.join("real/x.txt"), "real x\n").unwrap();
    assert_eq!(
        s.get("/old/p?q=1").text(),
        "new /new/p q=1",
        "server rule, no flag: location chosen again"
    );
    assert_eq!(s.get("/a/z").text(), "b /b/z", "last stops the list and re-matches");
    assert_eq!(s.get("/c/x.txt").text(), "real x\n", "break: served in this location");
    let r = s.get("/moved/p?k=v");
    let at = |p: &str| format!("http://localhost:{}{p}", s.port);
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some(at("/here/p?from=moved&k=v").as_str()))
    );
    let r = s.get("/tmp/p?k=v");
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some(at("/there/p").as_str())),
        "a final ? drops the query"
    );
    let r = s.get("/ext/a");
    assert_eq!((r.status, r.header("location")), (302, Some("https://example.org/a")));
    // An absolute URL's path is percent-encoded too (a decoded space or
    // quote never reaches Location raw); the query follows as sent.
    let r = s.get("/ext/a%20b/%C3%BC%22x?z=1");
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("https://example.org/a%20b/%C3%BC%22x?z=1"))
    );
    assert_eq!(s.get("/loop").status, 500);
    assert!(s.error_log().contains("rewrite or internal redirection cycle"));
    // A decoded "&" or "?" from the path is data: in the query it is
    // escaped (no injected parameter), in the path it stays in the path.
    assert_eq!(s.get("/q/a%26b").text(), "new /new/x-a&b k=a%26b");
    assert_eq!(s.get("/q/a%3Fb?o=1").text(), "new /new/x-a?b k=a%3Fb&o=1");
    assert_eq!(s.get("/p/a%3Fb?o=1").text(), "new /new/y-a?b o=1");
    // A redirect's path is sent percent-encoded.
    let r = s.get("/enc/a%20b%22c");
    assert_eq!(r.header("location"), Some(at("/to/a%20b%22c").as_str()));
    // A server-level rewrite is an internal redirect: it reaches an internal location.
    assert_eq!(s.get("/int/x").status, 404, "not from outside");
    assert_eq!(
        s.get("/old-int").text(),
        "200 internal /int/y".trim_start_matches("200 ")
    );
}

/// alias: a prefix location's path replaced by a directory; a regex
/// location's captures naming the file; an exact location aliased to a
/// file; nothing reaches outside the alias directory.
#[test]
fn alias_with_and_without_captures() {
    let s = Server::start();
    let data = s.dir.path().join("data");
    std::fs::create_dir_all(data.join("images/sub")).unwrap();
    std::fs::write(data.join("images/top.gif"), "GIF89a top").unwrap();
    std::fs::write(data.join("images/sub/index.html"), "sub index\n").unwrap();
    std::fs::write(data.join("images/user-ann.png"), "ann's png").unwrap();
    std::fs::write(data.join("fav.ico"), "icon").unwrap();
    std::fs::write(s.dir.path().join("secret.txt"), "secret\n").unwrap();
    let d = data.display();
    let s = Server::with_root(
        Opts {
            more: format!(
                "[[server.location]]\nmatch = \"/i/\"\nalias = \"{d}/images/\"\n\n\
                 [[server.location]]\nmatch = \"~ ^/users/(?<who>[a-z]+)/avatar\\\\.png$\"\nalias = \"{d}/images/user-$who.png\"\n\n\
                 [[server.location]]\nmatch = \"= /favicon.ico\"\nalias = \"{d}/fav.ico\"\n"
            ),
            ..Opts::default()
        },
        TempDir::new(),
        s.root.clone(),
    );
    assert_eq!(s.get("/i/top.gif").text(), "GIF89a top");
    assert_eq!(s.get("/i/top.gif").header("content-type"), Some("image/gif"));
    assert_eq!(s.get("/i/sub/").text(), "sub index\n");
    let r = s.get("/i/sub");
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some(format!("http://localhost:{}/i/sub/", s.port).as_str())),
        "the redirect keeps the URL path"
    );
    assert_eq!(s.get("/users/ann/avatar.png").text(), "ann's png");
    assert_eq!(s.get("/users/bob/avatar.png").status, 404);
    assert_eq!(s.get("/favicon.ico").text(), "icon");
    for p in ["/i/../secret.txt", "/i/%2e%2e/secret.txt", "/i/..%2fsecret.txt"] {
        let r = s.get(p);
        assert_ne!(r.text(), "secret\n", "{p}");
    }
}

/// Server selection: exact names, `*.x` and `x.*` wildcards, regexes,
/// in nginx's precedence; `default_server` for unknown or missing hosts.
#[test]
fn server_names_wildcards_regexes_and_default() {
    let block = |names: &str, extra: &str, body: &str| {
        format!(
            "[[server]]\nlisten = \"127.0.0.1:{{port}}\"\nserver_name = {names}\n{extra}\n\
             [[server.location]]\nmatch = \"/\"\nreturn = \"200 {body}\"\n\n"
        )
    };
    let more = [
        block("[\"*.example.org\"]", "", "wild-leading"),
        block("[\"www.example.*\"]", "", "wild-trailing"),
        block(
            "[\"~^api\\\\.(?<region>[a-z]+)\\\\.example\\\\.net$\"]",
            "",
            "regex $region",
        ),
        block(
            "[\"exact.example.org\", \".dot.test\"]",
            "default_server = true",
            "exact",
        ),
    ]
    .concat();
    let s = Server::with(Opts {
        server: "server_name = \"first.test\"".into(),
        more,
        ..Opts::default()
    });
    let host = |h: &str| {
        let req = if h.is_empty() {
            "GET / HTTP/1.0\r\n\r\n".to_string()
        } else {
            format!("GET / HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n")
        };
        s.request(&req).text()
    };
    assert_eq!(host("a.example.org"), "wild-leading");
    assert_eq!(host("deep.a.example.org"), "wild-leading");
    assert_eq!(host("www.example.com"), "wild-trailing");
    assert_eq!(host("www.example.org"), "wild-leading", "*.x beats x.*");
    assert_eq!(host("exact.example.org"), "exact", "exact beats *.x");
    assert_eq!(host("EXACT.Example.org:8080"), "exact", "case and port do not matter");
    assert_eq!(
        host("api.eu.example.net"),
        "regex eu",
        "the server name's captures in a location"
    );
    assert_eq!(host("dot.test"), "exact", ".x matches x itself");
    assert_eq!(host("sub.dot.test"), "exact");
    assert_eq!(host("unknown.test"), "exact", "the default_server, not the first");
    assert_eq!(host(""), "exact", "no Host: the default server");
    assert_eq!(host("first.test"), "<h1>hello</h1>\n");
}

/// gzip_static: `file.gz` / `file.br` for clients that accept them, with
/// the original's type and `Vary`; curl --compressed decodes it.
#[test]
fn gzip_static_precompressed_files() {
    let s = Server::with(Opts {
        more: "[[server.location]]\nmatch = \"/assets/\"\ngzip_static = true\n".into(),
        ..Opts::default()
    });
    let dir = s.root.join("assets");
    std::fs::create_dir_all(&dir).unwrap();
    let text = "hello compressed world\n".repeat(100);
    std::fs::write(dir.join("app.js"), &text).unwrap();
    let ok = std::process::Command::new("gzip")
        .args(["-k", "-9", dir.join("app.js").to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::write(dir.join("app.js.br"), b"not really brotli").unwrap();
    std::fs::write(dir.join("plain.txt"), "plain\n").unwrap();
    let get = |ae: &str, path: &str| {
        s.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: a\r\nAccept-Encoding: {ae}\r\nConnection: close\r\n\r\n"
        ))
    };
    let r = get("gzip, deflate", "/assets/app.js");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert!(r.body.starts_with(&[0x1f, 0x8b]), "gzip bytes");
    let r = get("br;q=1, gzip;q=0.5", "/assets/app.js");
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.text(), "not really brotli");
    let r = get("gzip;q=0, identity", "/assets/app.js");
    assert_eq!(r.header("content-encoding"), None, "q=0 refuses gzip");
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.text(), text);
    let r = get("gzip", "/assets/plain.txt");
    assert_eq!(
        (r.header("content-encoding"), r.text().as_str()),
        (None, "plain\n"),
        "no .gz: identity"
    );
    let r = get("gzip", "/index.html");
    assert_eq!(r.header("vary"), None, "off outside the location");
    // A real client decodes it.
    let url = format!("http://127.0.0.1:{}/assets/app.js", s.port);
    let (ok, body) = curl(&["-s", "--compressed", "-H", "Accept-Encoding: gzip", &url]);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&body), text);
}

/// On-the-fly gzip: small and large (streamed, chunked) text bodies,
/// decoded by curl --compressed; not for ranges, other types, short
/// bodies, clients without gzip, or HTTP/1.0 framing mistakes.
#[test]
fn gzip_on_the_fly() {
    let s = Server::with(Opts {
        server: "gzip = true\ngzip_min_length = 100".into(),
        ..Opts::default()
    });
    let small = "small text body that compresses well ".repeat(20);
    let big: String = (0..200_000)
        .map(|i| format!("line {i} of a large text file\n"))
        .collect();
    std::fs::write(s.root.join("small.txt"), &small).unwrap();
    std::fs::write(s.root.join("big.txt"), &big).unwrap();
    std::fs::write(s.root.join("tiny.txt"), "tiny").unwrap();
    std::fs::write(s.root.join("pic.png"), vec![7u8; 5000]).unwrap();
    let url = |p: &str| format!("http://127.0.0.1:{}{p}", s.port);
    for (path, text) in [("/small.txt", &small), ("/big.txt", &big)] {
        let (ok, body) = curl(&["-s", "--compressed", &url(path)]);
        assert!(ok, "{path}");
        assert_eq!(String::from_utf8_lossy(&body), *text, "{path}");
        let (ok, head) = curl(&[
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "Accept-Encoding: gzip",
            &url(path),
        ]);
        assert!(ok);
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.contains("content-encoding: gzip"), "{path}: {head}");
        assert!(head.contains("vary: accept-encoding"), "{head}");
        assert!(head.contains("etag: w/\""), "weak ETag: {head}");
        assert!(!head.contains("accept-ranges"), "{head}");
        // A HEAD gets the GET's head (RFC 9110 §9.3.2), compressed length included.
        let (_, head_of_head) = curl(&["-s", "-I", "-H", "Accept-Encoding: gzip", &url(path)]);
        let head_of_head = String::from_utf8_lossy(&head_of_head).to_ascii_lowercase();
        let fields = |h: &str| -> Vec<String> {
            h.lines()
                .filter(|l| !l.starts_with("date:"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(fields(&head_of_head), fields(&head), "{path}");
    }
    let (_, head) = curl(&[
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        "Accept-Encoding: gzip",
        &url("/big.txt"),
    ]);
    assert!(
        String::from_utf8_lossy(&head)
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
    );
    let plain = |p: &str, extra: &str| {
        s.request(&format!(
            "GET {p} HTTP/1.1\r\nHost: a\r\n{extra}Connection: close\r\n\r\n"
        ))
    };
    let r = plain("/small.txt", "");
    assert_eq!(
        (r.header("content-encoding"), r.text()),
        (None, small.clone()),
        "no Accept-Encoding"
    );
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let r = plain("/big.txt", "Accept-Encoding: gzip\r\nRange: bytes=0-9\r\n");
    assert_eq!(
        (r.status, r.header("content-encoding")),
        (206, None),
        "never for ranges"
    );
    assert_eq!(
        plain("/tiny.txt", "Accept-Encoding: gzip\r\n").header("content-encoding"),
        None,
        "under gzip_min_length"
    );
    assert_eq!(
        plain("/pic.png", "Accept-Encoding: gzip\r\n").header("content-encoding"),
        None,
        "not a listed type"
    );
    // HTTP/1.0: no chunked framing, the close ends the body.
    let out = s.raw(b"GET /big.txt HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n");
    let text = String::from_utf8_lossy(&out);
    assert!(
        !text.to_ascii_lowercase().contains("transfer-encoding"),
        "{}",
        &text[..200]
    );
    let body_at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&out[body_at..]), &mut unzipped).unwrap();
    assert_eq!(unzipped, big.as_bytes());
}

/// auth_basic with a file made by Debian's htpasswd (bcrypt, SHA and apr1
/// entries), per location, `off` below it; 401 with the realm otherwise.
#[test]
fn auth_basic_with_htpasswd_files() {
    let s = Server::start();
    let file = s.dir.path().join("users.htpasswd");
    let f = file.to_str().unwrap();
    for args in [
        vec!["-c", "-B", "-b", f, "alice", "secret1"],
        vec!["-s", "-b", f, "bob", "secret2"],
        vec!["-m", "-b", f, "carol", "se:cret3"],
    ] {
        let out = std::process::Command::new("htpasswd")
            .args(&args)
            .output()
            .expect("htpasswd (apache2-utils)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("alice:$2y$") && text.contains("bob:{SHA}") && text.contains("carol:$apr1$"),
        "{text}"
    );
    std::fs::create_dir_all(s.root.join("whoami")).unwrap();
    let s = Server::with_root(
        Opts {
            more: format!(
                "[[server.location]]\nmatch = \"/private/\"\nauth_basic = \"Staff only\"\nauth_basic_user_file = \"{f}\"\n\n\
                 [[server.location]]\nmatch = \"/private/public/\"\nauth_basic = \"off\"\n\n\
                 [[server.location]]\nmatch = \"/whoami/\"\nauth_basic = \"Staff only\"\nauth_basic_user_file = \"{f}\"\n\
                 cgi = {{ dir = \"{}\" }}\n",
                s.root.join("whoami").display()
            ),
            ..Opts::default()
        },
        TempDir::new(),
        s.root.clone(),
    );
    std::fs::create_dir_all(s.root.join("private/public")).unwrap();
    std::fs::write(s.root.join("private/doc.txt"), "secret doc\n").unwrap();
    std::fs::write(s.root.join("private/public/open.txt"), "open\n").unwrap();
    let url = format!("http://127.0.0.1:{}/private/doc.txt", s.port);
    let (_, head) = curl(&["-s", "-D", "-", "-o", "/dev/null", &url]);
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(
        head.contains("WWW-Authenticate: Basic realm=\"Staff only\", charset=\"UTF-8\""),
        "{head}"
    );
    for (user, pass) in [("alice", "secret1"), ("bob", "secret2"), ("carol", "se:cret3")] {
        let (ok, body) = curl(&["-s", "-f", "-u", &format!("{user}:{pass}"), &url]);
        assert!(ok, "{user}");
        assert_eq!(String::from_utf8_lossy(&body), "secret doc\n");
    }
    let (ok, _) = curl(&["-s", "-f", "-u", "alice:wrong", &url]);
    assert!(!ok, "a wrong password is refused");
    // Two sets of credentials: which one would the application believe? 400, as nginx.
    let basic = |up: &str| format!("Basic {}", base64_encode(up.as_bytes()));
    let r = s.request(&format!(
        "GET /private/doc.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        basic("alice:wrong"),
        basic("bob:secret2")
    ));
    assert_eq!(r.status, 400, "{}", r.text());
    // nginx's words, naming the user.
    assert!(
        s.error_log()
            .contains("auth_basic \"Staff only\": user \"alice\": password mismatch"),
        "{}",
        s.error_log()
    );
    let (ok, _) = curl(&["-s", "-f", "-u", "mallory:x", &url]);
    assert!(!ok);
    assert!(
        s.error_log()
            .contains("auth_basic \"Staff only\": user \"mallory\" was not found"),
        "{}",
        s.error_log()
    );
    // $remote_user in the access log, as nginx's combined format.
    assert!(
        eventually(std::time::Duration::from_secs(3), || s
            .access_log()
            .contains(" - bob [")),
        "{}",
        s.access_log()
    );
    assert_eq!(
        s.get("/private/public/open.txt").text(),
        "open\n",
        "auth_basic = \"off\" below"
    );
    assert_eq!(s.get("/index.html").status, 200);
    // A CGI script behind auth_basic learns who (RFC 3875 §4.1.1, §4.1.11).
    write_script(
        &s.root.join("whoami/me.sh"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s %s\\n' \"$AUTH_TYPE\" \"$REMOTE_USER\"\n",
    );
    let me = format!("http://127.0.0.1:{}/whoami/me.sh", s.port);
    let (ok, body) = curl(&["-s", "-f", "-u", "bob:secret2", &me]);
    assert!(ok, "{}", s.error_log());
    assert_eq!(String::from_utf8_lossy(&body), "Basic bob\n");
}

/// Standard base64 with padding (for an Authorization field).
fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
