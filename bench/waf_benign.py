"""Benign API and browser traffic for the WAF evaluation corpus, generated deterministically.

Every request is something a legitimate client of a shop, a forum, a developer Q&A site, an
identity provider or a cloud console sends every day, including the shapes that trip naive
filters: apostrophes in names (O'Brien), inch marks (12" Skillet), prose with "select",
"union", "drop", "or", "where" as English words, SQL and shell snippets in questions and
code reviews, markdown, HTML-escaped text, file paths, URLs, emails, JWTs, OAuth and PKCE form
posts, IAM policies with ``${aws:username}`` and ``arn:...:*``, GraphQL, base64 uploads,
non-Latin scripts and emoji. All text below was written for Bastion; names and addresses are
made up, hosts are ``.example`` and addresses are from documentation ranges.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

from waf_corpus import (
    PATHS_GET,
    Placed,
    Request,
    multipart,
    ordinary_headers,
    record,
    sample_unique,
)

FIRST = ["Seán", "Zoë", "Mary-Kate", "D'Angelo", "José", "Anaïs", "Björn", "Chloé", "Renée",
         "Jean-Luc", "Siobhán", "Łukasz", "Ngozi", "Aiko", "Priya", "Omar", "Fatima", "Liam",
         "Ava", "Noah", "Olivia", "Mateo", "Hana", "Kwame", "Ingrid", "Tomás"]
LAST = ["O'Brien", "O'Neil", "D'Souza", "McDonald", "Smith-Jones", "van der Berg", "Nuñez",
        "Müller", "Østergaard", "L'Amour", "Dell'Acqua", "O'Connor", "Nakamura", "Okafor",
        "Kowalski", "García Márquez", "Al-Farsi", "Ó Súilleabháin", "Le Blanc", "St. James"]
STREETS = ["123 Main St., Apt #4", "1600 Amphitheatre Pkwy", "10 Downing St", "221B Baker Street",
           "Rue de l'Église 5", "Königstraße 12/3", "4-2-8 Shibakoen", "55 O'Connell St. Upper",
           "PO Box 1234", "1 Infinite Loop, Bldg 3 - Floor 2", "Calle 5 de Mayo #210 Int. 3"]
CITIES = [("Dublin", "D02 X285", "IE"), ("Austin", "78701", "US"), ("Lyon", "69002", "FR"),
          ("München", "80331", "DE"), ("Tokyo", "105-0011", "JP"), ("Toronto", "M5V 2T6", "CA")]
PRODUCTS = ['12" Skillet', 'Cast-iron 10.25" Pan', "Men's 5'10\" Wetsuit", "Chef's Knife (8\")",
            "Kids' Rain Boots", "2x4 Lumber - 8'", "USB-C to USB-C (6 ft)", "Ben & Jerry's Pint",
            "Rock 'n' Roll Vinyl", "100% Cotton T-Shirt <Large>", "Table Lamp w/ 3-Way Switch",
            "AT&T Prepaid SIM", "O'Reilly: Learning SQL", "Drop-leaf Table", "Union Jack Mug",
            "Select Comfort Pillow", "Script Font Stamp Set", "Alert Whistle (2-pack)"]
REVIEWS = [
    "Great pan! Heats evenly. I'd buy it again -- 5 stars.",
    "Don't bother with the 10\" one; the 12\" is the one to get. Select the larger size.",
    "It's OK. Shipping took forever, and the box was crushed :( Drop-off was at the wrong door.",
    "Works as advertised. Tip: season it with oil & bake at 450°F for an hour.",
    "We bought two: one for us and one for my mom's kitchen. She loves it <3",
    "Not great, not terrible. The handle gets hot -- use a mitt!!!",
    "I was skeptical, but it's actually the best purchase of 2024. 10/10 would recommend.",
    "Arrived damaged. Customer service (thanks, Jen!) replaced it in 2 days.",
    "Where do I even start? It's heavy, it's sturdy, and it'll outlive me. 1=1 happy customer.",
    "Sizing runs small; order one up. I'm 5'10\" and 180 lbs and the L fits like an M.",
    "The union of great design and fair price. Drop everything and buy it.",
    "Is it dishwasher safe? The manual says \"hand wash only\" but the site says otherwise...",
    "Bought it for my husband's birthday; he's cooked with it every day since (no joke).",
    "Meh. For $49.99 I expected better. Returned it -- refund took 3-5 business days.",
    "Perfect for camping. We used it over an open fire & it's fine. #outdoors #castiron",
    "Select the 'gift wrap' option, it's worth the $3 -- looked beautiful.",
    "Seriously the best. Or at least better than the 3 others I tried, and that's saying a lot.",
    "Schön verarbeitet, aber etwas schwer. Lieferung nach München in 2 Tagen. 👍",
    "とても使いやすいです。また買います！",
    "C'est parfait pour les crêpes. J'adore ! 😍",
]
QUESTIONS = [
    "How do I select all rows where the date is between two values?\n\n```sql\nSELECT id, name"
    " FROM orders WHERE created_at BETWEEN ? AND ? ORDER BY created_at DESC;\n```\n\nI get an"
    " empty result even though there's data.",
    "Why does `git push` say \"rejected (non-fast-forward)\"? I ran `git pull --rebase` already.",
    "What's the difference between UNION and UNION ALL in Postgres? Performance-wise, which"
    " should I prefer for a report?",
    "In Python, how do I read a file line by line?\n\n```python\nwith open('data/input.txt') as"
    " f:\n    for line in f:\n        print(line.rstrip())\n```",
    "My Dockerfile has `RUN apt-get update && apt-get install -y curl` but the build fails on"
    " arm64. Any idea?",
    "How can I drop a column in pandas if it exists? df.drop(columns=['tmp'], errors='ignore')"
    " seems right but I'm not sure.",
    "Is it safe to store the user's email in localStorage? I only use it to pre-fill the login"
    " form.",
    "Regex question: why does ^[a-z0-9_-]{3,16}$ not match 'Bob_99'? (case?)",
    "React: useEffect runs twice in development. Is that expected with StrictMode?",
    "Can someone explain what `SELECT COUNT(*) FROM users GROUP BY country HAVING COUNT(*) > 10`"
    " returns exactly?",
    "How do I escape a single quote in a SQL string? e.g. the name O'Brien breaks my insert.",
    "What's the Bash equivalent of `for f in *.txt; do wc -l \"$f\"; done` in PowerShell?",
    "JavaScript: document.querySelector('#main').addEventListener('click', handler) -- why"
    " does the handler fire on child elements too?",
    "Which is better for a 12\" skillet: canola or flaxseed oil for seasoning?",
    "Where can I find the docs/readme.md for version 2? The link in the wiki is broken.",
    "Should I use `rm -rf node_modules && npm ci` in CI, or is `npm ci` enough?",
    "Kotlin: what does `it` refer to inside a `let { }` block?",
    "How to join two tables and select only the latest order per customer (MySQL 8)?",
    "Excel tip: =IF(A1>10, \"big\", \"small\") -- how do I apply it to the whole column?",
    "Go: when should I use a select statement with a default case?",
]
COMMENTS = [
    "LGTM! Minor nit: rename `tmp` to something clearer.",
    "This drops support for Python 3.8 -- is that intended? If so, update setup.cfg.",
    "Could we use a prepared statement here instead of string formatting? Safer & faster.",
    "Fixed the typo in docs/getting-started.md (\"teh\" -> \"the\").",
    "Please don't merge yet; waiting on QA. /cc @maria",
    "Works on my machine ¯\\_(ツ)_/¯ -- can you share the stack trace?",
    "Replaced the `<div>` soup with semantic `<nav>` and `<main>` elements; a11y score +12.",
    "See https://docs.example.org/guide/install?lang=en#requirements for the prerequisites.",
    "The union type `string | number` is too wide here; narrow it to `number`.",
    "Ran the migration locally: `alembic upgrade head` -- all good.",
    "I'll drop by the office at 3pm; select whichever slot works for you on the calendar.",
    "Thanks for the quick fix!! 🎉",
    "Tom &amp; Jerry &lt;3 -- the HTML entities show up raw in the preview, is that a bug?",
    "R&amp;D budget for Q3 is in finance/2024/q3-budget.xlsx",
    "Use `SELECT ... FOR UPDATE SKIP LOCKED` for the job queue; it avoids double processing.",
]
SEARCHES = ["select comfort mattress", "union station parking", "drop leaf table", "or else book",
            "where the crawdads sing", "how to delete old emails", "1=1 adapter", "script fonts",
            "alert whistle", "cast iron 12\" skillet", "men's 5'10\" wetsuit", "o'brien pub",
            "insert coin arcade", "update firmware router", "exec chair ergonomic",
            "union jack flag", "select all shortcut mac", "drop shipping suppliers",
            "null pointer exception java", "c:/program files missing dll", "wine & cheese",
            "50% off shoes", "rock 'n' roll", "tv < 500 dollars", "a+b=c math", "#1 bestseller",
            "\"exact phrase\" search", "café près de moi", "東京 ラーメン", "join us careers",
            "from dusk till dawn", "table for 2 tonight", "javascript tutorial for beginners",
            "sleep mask", "benchmark laptop 2024", "char broil grill", "waitfor it song",
            "the having of things", "group by age chart", "cat food grain free"]
PASSWORDS = ["Tr0ub4dor&3", "correct-horse-battery-staple", "x!Q9#v$2;pL", "P@ssw0rd'2024",
             "s3cr3t--but-long", "Zq8*<>hello", "my cat's name is Tom!", "1qaz@WSX3edc",
             "(hunter2)", "Ünïcødé-Pässwörd"]
EMAILS = ["jane+news@example.co.uk", "sean.obrien@example.com", "d'angelo@example.org",
          "first.last@sub.example.net", "x_y-z@example.io", "info@münchen.example"]
PHONES = ["+1 (555) 010-1234", "+353 1 555 0199", "+49 30 5550123", "555-0100 ext. 42",
          "+81-3-5555-0123", "(020) 5550 1234"]
UA_ARTICLES = ["docs/readme.md", "reports/2024/q3.pdf", "src/components/Button.tsx",
               "images/2024/summer-sale.png", "backups/db-2024-10-01.sql.gz",
               "static/js/app.min.js", "assets/fonts/Inter-Regular.woff2", "notes/todo.txt",
               "C:\\Users\\Public\\Documents\\invoice.pdf", "~/Downloads/receipt.png"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(rng: random.Random) -> str:
    header = b64url(json.dumps({"alg": rng.choice(["RS256", "ES256"]), "typ": "JWT",
                                "kid": f"k{rng.randint(1, 9)}"}).encode())
    payload = b64url(json.dumps({"iss": "https://id.example.com", "sub": str(rng.randint(1, 99999)),
                                 "aud": "api", "exp": 1767225600 + rng.randint(0, 9999),
                                 "scope": "openid profile orders:read"}).encode())
    return f"{header}.{payload}.{b64url(rng.randbytes(64))}"


def person(rng: random.Random) -> dict[str, Any]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    city, postcode, country = rng.choice(CITIES)
    return {"first_name": first, "last_name": last, "display_name": f"{first} {last}",
            "email": rng.choice(EMAILS), "phone": rng.choice(PHONES),
            "address": {"line1": rng.choice(STREETS), "city": city, "postcode": postcode,
                        "country": country}}


def api_headers(rng: random.Random, ctype: str | None = "application/json") -> list[list[str]]:
    h = ordinary_headers(rng, browser=False)
    if rng.random() < 0.7:
        h.append(["authorization", f"Bearer {jwt(rng)}"])
    if ctype:
        h.append(["content-type", ctype])
    return h


def browser_headers(rng: random.Random) -> list[list[str]]:
    h = ordinary_headers(rng, browser=True)
    cookies = [f"sessionid={rng.getrandbits(128):032x}", f"csrftoken={b64url(rng.randbytes(24))}",
               f"_ga=GA1.2.{rng.randint(10**8, 10**9)}.{rng.randint(10**9, 2 * 10**9)}",
               "theme=dark", "lang=en-US", "cookie_consent={\"analytics\":true,\"ads\":false}",
               f"cart=%7B%22items%22%3A{rng.randint(0, 5)}%7D"]
    h.append(["cookie", "; ".join(rng.sample(cookies, rng.randint(1, 4)))])
    return h


def jpost(path: str, doc: Any, rng: random.Random, method: str = "POST") -> Placed:
    return method, path, api_headers(rng), json.dumps(doc, ensure_ascii=rng.random() < 0.3
                                                      ).encode(), "json"


def form(path: str, fields: list[tuple[str, str]], rng: random.Random,
         headers: list[list[str]] | None = None) -> Placed:
    h = (headers or browser_headers(rng)) + [["content-type", "application/x-www-form-urlencoded"]]
    return "POST", path, h, urlencode(fields).encode(), "form"


def g_user(rng: random.Random) -> Placed:
    p = person(rng)
    p["bio"] = rng.choice(REVIEWS + COMMENTS)
    return jpost(rng.choice(["/api/v1/users", "/api/v1/customers"]), p, rng,
                 rng.choice(["POST", "PUT", "PATCH"]))


def g_review(rng: random.Random) -> Placed:
    doc = {"product": rng.choice(PRODUCTS), "rating": rng.randint(1, 5),
           "title": rng.choice(REVIEWS)[:40], "body": " ".join(rng.sample(REVIEWS, 2)),
           "author": f"{rng.choice(FIRST)} {rng.choice(LAST)}", "verified": rng.random() < 0.8}
    return jpost(f"/api/v1/products/{rng.randint(1, 9999)}/reviews", doc, rng)


def g_question(rng: random.Random) -> Placed:
    doc = {"title": rng.choice(QUESTIONS).split("\n")[0][:90],
           "body_markdown": rng.choice(QUESTIONS),
           "tags": rng.sample(["sql", "python", "postgres", "bash", "git", "react", "docker"], 2)}
    return jpost("/api/questions", doc, rng)


def g_comment(rng: random.Random) -> Placed:
    if rng.random() < 0.5:
        return form(f"/forum/t/{rng.randint(1, 50000)}/reply", [
            ("body", rng.choice(COMMENTS + REVIEWS)), ("notify", "on")], rng)
    return jpost(f"/api/v1/pulls/{rng.randint(1, 900)}/comments", {
        "body": rng.choice(COMMENTS), "path": rng.choice(UA_ARTICLES), "line": rng.randint(1, 400)},
        rng)


def g_search(rng: random.Random) -> Placed:
    q = rng.choice(SEARCHES)
    params = [("q", q)] + rng.sample([("page", "2"), ("sort", "-price"), ("in_stock", "true"),
                                      ("category", "kitchen & dining"), ("lang", "en")], 2)
    enc = urlencode(params) if rng.random() < 0.5 else urlencode(params, quote_via=quote)
    return "GET", f"{rng.choice(['/search', '/api/v1/products', '/shop/catalog'])}?{enc}", \
        browser_headers(rng), None, "query"


def g_browse(rng: random.Random) -> Placed:
    path = rng.choice(PATHS_GET + ["/", "/about", "/blog/2024/10/why-we-moved-to-postgres",
                                   "/p/12-inch-skillet", "/favicon.ico", "/static/css/site.css",
                                   "/docs/readme.md", "/u/sean-obrien", "/api/v1/me"])
    return "GET", path, browser_headers(rng), None, "path"


def g_jsonapi(rng: random.Random) -> Placed:
    q = ("filter[status]=active&filter[created_at][gte]=2024-01-01"
         f"&page[size]={rng.choice([10, 20, 50])}"
         f"&page[number]={rng.randint(1, 9)}&fields[users]=id,name,email&sort=-created_at"
         f"&include=orders.items")
    return "GET", f"/api/v2/users?{q}", api_headers(rng, None), None, "query"


def g_oauth(rng: random.Random) -> Placed:
    redirect = rng.choice(["https://app.example.com/callback", "com.example.app:/oauth2redirect",
                           "http://127.0.0.1:53682/"])
    kind = rng.randint(0, 2)
    if kind == 0:
        fields = [("grant_type", "authorization_code"), ("code", b64url(rng.randbytes(32))),
                  ("redirect_uri", redirect), ("client_id", "web-app"),
                  ("code_verifier", b64url(rng.randbytes(48)))]
    elif kind == 1:
        fields = [("grant_type", "refresh_token"), ("refresh_token", b64url(rng.randbytes(40))),
                  ("scope", "openid profile email offline_access")]
    else:
        fields = [("grant_type", "client_credentials"), ("scope", "orders:read orders:write"),
                  ("audience", "https://api.example.com/")]
    h = ordinary_headers(rng, browser=False)
    if rng.random() < 0.5:
        h.append(["authorization", "Basic " + base64.b64encode(
            f"svc-{rng.randint(1, 99)}:{b64url(rng.randbytes(18))}".encode()).decode()])
    return form("/oauth2/token", fields, rng, h)


def g_authorize(rng: random.Random) -> Placed:
    params = {"response_type": "code", "client_id": "web-app", "scope": "openid profile email",
              "redirect_uri": "https://app.example.com/callback",
              "state": b64url(rng.randbytes(16)),
              "nonce": b64url(rng.randbytes(16)), "code_challenge": b64url(rng.randbytes(32)),
              "code_challenge_method": "S256", "prompt": rng.choice(["login", "consent", "none"])}
    return "GET", f"/oauth2/authorize?{urlencode(params)}", browser_headers(rng), None, "query"


def g_login(rng: random.Random) -> Placed:
    return form(rng.choice(["/login", "/account/signin"]), [
        ("username", rng.choice(EMAILS)), ("password", rng.choice(PASSWORDS)),
        ("remember", "1"), ("next", rng.choice(["/dashboard", "/orders?page=2", "/"]))], rng)


def g_iam(rng: random.Random) -> Placed:
    acct = f"{rng.randint(10**11, 10**12 - 1)}"
    policy = {"Version": "2012-10-17", "Statement": [
        {"Sid": "HomeDir", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": "arn:aws:s3:::team-bucket/home/${aws:username}/*"},
        {"Sid": "List", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": "arn:aws:s3:::team-bucket",
         "Condition": {"StringLike": {"s3:prefix": ["home/${aws:username}/*"]}}},
        {"Effect": "Deny", "Action": "*", "Resource": "*",
         "Condition": {"NotIpAddress": {"aws:SourceIp": ["203.0.113.0/24", "2001:db8::/32"]},
                       "Bool": {"aws:MultiFactorAuthPresent": "false"}}},
        {"Effect": "Allow", "Action": "iam:PassRole",
         "Resource": f"arn:aws:iam::{acct}:role/app-*"}]}
    return jpost(f"/api/iam/policies/{rng.choice(['home-dirs', 'deny-offsite', 'ci-deploy'])}",
                 {"name": "team-access", "document": policy}, rng, "PUT")


def g_graphql(rng: random.Random) -> Placed:
    queries = [
        "query GetUser($id: ID!) { user(id: $id) { name email orders(first: 10) { edges { node"
        " { id total createdAt } } } } }",
        "mutation AddReview($input: ReviewInput!) { addReview(input: $input) { id rating } }",
        "query Search($q: String!) { search(query: $q, first: 20) { ... on Product { id name price"
        " } ... on Article { id title } } }",
        "{ __typename viewer { login repositories(last: 3) { nodes { name } } } }",
    ]
    variables = {"id": str(rng.randint(1, 9999)), "q": rng.choice(SEARCHES),
                 "input": {"productId": rng.randint(1, 99), "rating": 4,
                           "body": rng.choice(REVIEWS)}}
    return jpost("/graphql", {"query": rng.choice(queries), "variables": variables,
                              "operationName": None}, rng)


def g_upload(rng: random.Random) -> Placed:
    blob = base64.b64encode(b"\x89PNG\r\n\x1a\n" + rng.randbytes(rng.randint(200, 1500))).decode()
    if rng.random() < 0.5:
        return jpost("/api/v1/attachments", {"filename": rng.choice(
            ["avatar.png", "scan 2024-10-01.png", "O'Brien passport.png"]),
            "content_type": "image/png", "content": blob}, rng)
    csv = "sku,name,price\nA-1,\"12\"\" Skillet\",39.99\nB-2,Kids' Rain Boots,24.50\n"
    ctype, body = multipart([("description", rng.choice(COMMENTS), None, None),
                             ("file", csv, "products.csv", "text/csv")], rng)
    return "POST", "/api/import", browser_headers(rng) + [["content-type", ctype]], body, \
        "multipart"


def g_checkout(rng: random.Random) -> Placed:
    p = person(rng)
    a = p["address"]
    return form("/checkout", [
        ("name", p["display_name"]), ("email", p["email"]), ("phone", p["phone"]),
        ("address1", a["line1"]), ("city", a["city"]), ("postcode", a["postcode"]),
        ("country", a["country"]), ("gift_message", rng.choice(
            ["Happy birthday, Mom! Love, D'Angelo & the kids xoxo",
             "Merry Xmas -- don't open early",
             "For the 12\" skillet fan in my life", ""])), ("coupon", "SAVE-10%")], rng)


def g_webhook(rng: random.Random) -> Placed:
    doc = {"action": rng.choice(["opened", "closed", "synchronize"]), "number": rng.randint(1, 900),
           "pull_request": {"title": rng.choice(COMMENTS)[:60], "body": rng.choice(COMMENTS),
                            "head": {"ref": "feature/o-brien-fix",
                                     "sha": f"{rng.getrandbits(160):040x}"},
                            "html_url": "https://git.example.com/acme/shop/pull/"
                                        f"{rng.randint(1, 900)}"},
           "repository": {"full_name": "acme/shop", "default_branch": "main"},
           "sender": {"login": "mary-kate", "type": "User"}}
    h = api_headers(rng) + [["x-hub-signature-256", f"sha256={rng.getrandbits(256):064x}"],
                            ["x-github-event", "pull_request"]]
    return "POST", "/hooks/git", h, json.dumps(doc).encode(), "json"


def g_ci(rng: random.Random) -> Placed:
    steps = [{"name": "Install", "run": "npm ci"}, {"name": "Test", "run": "npm test -- --ci"},
             {"name": "Lint", "run": "ruff check src && mypy -p app"},
             {"name": "Build", "run": "docker build -t registry.example.com/shop:${GIT_SHA} ."}]
    return jpost("/api/pipelines", {"name": "ci", "on": ["push"], "cron": "*/30 * * * *",
                                    "steps": rng.sample(steps, 3)}, rng)


def g_settings(rng: random.Random) -> Placed:
    return jpost("/api/v1/settings", {
        "notifications": {"email": True, "sms": False}, "timezone": "Europe/Dublin",
        "signature": rng.choice(["-- \nSeán O'Brien\nHead of R&D", "Cheers, Zoë 🙂",
                                 "<b>Bold</b> signatures aren't allowed, right?"]),
        "homepage": rng.choice(["https://www.example.org/about?lang=en", "https://o-brien.example/"]),
        "validation_regex": "^[A-Z]{2}-\\d{4}$", "date_format": "%Y-%m-%d %H:%M"}, rng, "PATCH")


def g_markdown(rng: random.Random) -> Placed:
    md = (f"# Release notes {rng.randint(1, 9)}.{rng.randint(0, 20)}\n\n"
          "- Fixed the `select` dropdown on Safari\n- Dropped support for IE 11\n"
          "- [Docs](https://docs.example.com/guide?version=2&lang=en) now cover the `union`"
          " type\n\n"
          "> **Note:** run `./scripts/migrate.sh --dry-run` first.\n\n"
          "| Option | Default |\n|---|---|\n| `timeout` | 30 s |\n")
    return jpost("/api/v1/posts", {"title": "Release notes", "content": md, "draft": False}, rng)


def g_chat(rng: random.Random) -> Placed:
    msgs = ["lol I'll drop by at 5; select whichever pizza you like", "where r u??",
            "ok -- or we could meet at Union Sq.", "can u send me the file? docs/readme.md",
            "I'm in a meeting, call u back :)", "🎉🎉 congrats!!", "1=1, always has been",
            "pls don't delete the #general channel", "<3 <3 <3", "what's 12\" in cm? ~30.5"]
    return jpost(f"/api/chat/rooms/{rng.randint(1, 300)}/messages", {
        "text": rng.choice(msgs), "client_msg_id": f"{rng.getrandbits(64):016x}"}, rng)


def g_tracking(rng: random.Random) -> Placed:
    url = (f"https://shop.example.com/p/{rng.randint(1, 999)}?utm_source=newsletter"
           f"&utm_campaign=fall-sale&ref=home")
    q = urlencode({"e": "page_view", "url": url, "title": rng.choice(PRODUCTS),
                   "sr": "1920x1080", "ts": str(1730000000000 + rng.randint(0, 10**9))})
    return "GET", f"/collect?{q}", browser_headers(rng), None, "query"


def g_redirect_login(rng: random.Random) -> Placed:
    nxt = rng.choice(["/orders?status=open&page=3", "/settings#security", "/p/12-inch-skillet"])
    return "GET", f"/login?next={quote_plus(nxt)}", browser_headers(rng), None, "query"


def g_xml(rng: random.Random) -> Placed:
    p = person(rng)
    doc = ('<?xml version="1.0" encoding="UTF-8"?><order xmlns="urn:example:orders">'
           f"<customer>{p['display_name'].replace('&', '&amp;')}</customer>"
           f"<item sku=\"A-1\" qty=\"1\">12&quot; Skillet</item><note>Leave at the back door -- "
           "don't ring</note></order>")
    return "POST", "/api/orders.xml", api_headers(rng, "application/xml"), doc.encode(), "xml"


GENERATORS: dict[str, tuple[Callable[[random.Random], Placed], int]] = {
    "user": (g_user, 220), "review": (g_review, 250), "question": (g_question, 150),
    "comment": (g_comment, 180), "search": (g_search, 250), "browse": (g_browse, 200),
    "jsonapi": (g_jsonapi, 60), "oauth": (g_oauth, 120), "authorize": (g_authorize, 60),
    "login": (g_login, 120), "iam": (g_iam, 60), "graphql": (g_graphql, 100),
    "upload": (g_upload, 80), "checkout": (g_checkout, 120), "webhook": (g_webhook, 60),
    "ci": (g_ci, 30), "settings": (g_settings, 60), "markdown": (g_markdown, 50),
    "chat": (g_chat, 100), "tracking": (g_tracking, 80), "redirect": (g_redirect_login, 50),
    "xml": (g_xml, 40),
}


def build(seed: int) -> list[Request]:
    out: list[Request] = []
    for name, (gen, n) in GENERATORS.items():
        rng = random.Random(f"{seed}:benign:{name}")
        cands = [record(gen(rng), "benign", f"bastion:bench/waf_benign.py#{gen.__name__}")
                 for _ in range(n * 2)]
        out += sample_unique(cands, n, rng)
    return out
