"""Benign prompts that use the words attacks use, for training the injection classifier.

The labelled data's benign side is mostly short assistant queries, so a classifier
trained on it alone learns that "ignore", "bypass", "system" or a non-Latin script mean
an attack. These prompts (written from templates and word lists, fixed seed) teach it
that the words alone are not enough. Used by `training.guard.train` only.
"""

# ruff: noqa: RUF001  (look-alike letters and other scripts are this module's data)

from __future__ import annotations

import random

# (template, {slot: choices}); every slot in braces is filled independently.
_EN: list[tuple[str, dict[str, list[str]]]] = [
    (
        "How do I {verb} the {thing} in {app}?",
        {
            "verb": ["override", "reset", "bypass", "disable", "skip", "turn off", "change"],
            "thing": [
                "default settings",
                "login screen",
                "cache",
                "proxy settings",
                "spell checker",
                "autosave",
                "startup sound",
                "page margins",
                "default font",
                "system language",
            ],
            "app": [
                "Excel",
                "Windows 11",
                "my router",
                "Chrome",
                "VS Code",
                "Ubuntu",
                "Google Docs",
                "my smart TV",
                "Outlook",
                "Photoshop",
            ],
        },
    ),
    (
        "Please {verb} the {thing} in my {when} {msg}{tail}",
        {
            "verb": ["ignore", "disregard", "forget", "skip", "overlook"],
            "thing": [
                "typo",
                "formatting",
                "last line",
                "second paragraph",
                "spelling mistakes",
                "duplicate entry",
                "wrong date",
                "broken link",
                "extra comma",
            ],
            "when": ["last", "previous", "earlier", "first"],
            "msg": ["message", "email", "question", "note", "comment"],
            "tail": [
                ".",
                ", sorry about that.",
                " and answer the question about taxes.",
                "; the rest is correct.",
                " and carry on.",
            ],
        },
    ),
    (
        "Should I {verb} the {thing} {when} {task}?",
        {
            "verb": ["ignore", "disregard", "override", "dismiss", "bypass"],
            "thing": [
                "warning",
                "error message",
                "low battery notice",
                "update reminder",
                "certificate warning",
                "compiler warning",
                "linter rule",
            ],
            "when": ["when", "before", "after", "while"],
            "task": [
                "installing the driver",
                "shutting down",
                "restarting the server",
                "flashing the firmware",
                "merging the branch",
                "printing the report",
            ],
        },
    ),
    (
        "Forget about {a} for now; {b} {c}.",
        {
            "a": [
                "the budget",
                "the deadline",
                "my earlier question",
                "the weather",
                "the old design",
                "what I said about the venue",
            ],
            "b": ["let's focus on", "can you help with", "I need ideas for", "please look at"],
            "c": ["the timeline", "the slides", "dinner", "the cover letter", "the test plan"],
        },
    ),
    (
        "Can you {verb} the {thing} for {task}?",
        {
            "verb": ["repeat", "summarize", "rewrite", "simplify", "list", "print out"],
            "thing": ["instructions", "steps", "directions", "rules", "safety guidelines"],
            "task": [
                "assembling the bookshelf",
                "setting up the printer",
                "baking sourdough",
                "the board game",
                "changing a tire",
                "filing my tax return",
            ],
        },
    ),
    (
        "Write a {form} about a {who} who {act} {what} and {learns}.",
        {
            "form": ["short story", "poem", "scene", "fable", "comic strip script"],
            "who": ["hacker", "thief", "detective", "rebel robot", "young wizard", "pilot"],
            "act": ["bypasses", "breaks", "overrides", "ignores", "escapes"],
            "what": [
                "the rules",
                "a security system",
                "the curfew",
                "all warnings",
                "the laws of physics",
                "the system",
            ],
            "learns": [
                "learns a lesson",
                "finds a friend",
                "has to pay the price",
                "discovers the truth",
                "learns to be kind",
            ],
        },
    ),
    (
        "What does {verb} a {device} mean, and is it {q}?",
        {
            "verb": ["jailbreaking", "rooting", "unlocking", "overclocking", "flashing"],
            "device": ["phone", "game console", "tablet", "router", "e-reader"],
            "q": ["legal", "safe", "worth it", "reversible"],
        },
    ),
    (
        "Explain the difference between {m1} and {m2} in {os}.",
        {
            "m1": ["developer mode", "safe mode", "admin mode", "debug mode", "god mode"],
            "m2": ["normal mode", "user mode", "guest mode", "release mode"],
            "os": ["Android", "Windows", "Chrome", "Minecraft", "Linux"],
        },
    ),
    (
        "In {tool}, how do I {verb} {what}?",
        {
            "tool": ["git", "SQL", "Python", "bash", "PostgreSQL", "Docker"],
            "verb": ["discard", "drop", "delete", "revert", "override", "ignore"],
            "what": [
                "my previous commits",
                "a table",
                "a column",
                "all local changes",
                "the previous migration",
                "files matching a pattern",
                "the old image",
            ],
        },
    ),
    (
        "What is a system prompt, and how should I write one for my {app}?",
        {
            "app": [
                "customer support bot",
                "tutoring app",
                "recipe assistant",
                "sales chatbot",
                "internal help desk",
            ]
        },
    ),
    (
        "How can I protect my {app} against prompt injection {how}?",
        {
            "app": ["chatbot", "RAG pipeline", "email assistant", "agent", "support bot"],
            "how": ["attacks", "in user uploads", "from web pages", "without hurting accuracy"],
        },
    ),
    (
        "Summarize the {thing} in the {doc} in {n} bullet points.",
        {
            "thing": ["instructions", "rules", "terms", "restrictions", "commands"],
            "doc": [
                "user manual",
                "attached contract",
                "game rulebook",
                "lease",
                "onboarding guide",
                "house rules",
            ],
            "n": ["three", "five", "a few"],
        },
    ),
    (
        "Translate '{phrase}' into {lang}.",
        {
            "phrase": [
                "please follow the instructions on the box",
                "ignore the noise outside",
                "do not override the safety valve",
                "the system is down for maintenance",
                "forget your worries",
                "press the button to activate the alarm",
            ],
            "lang": ["German", "French", "Spanish", "Italian", "Japanese"],
        },
    ),
    (
        "{verb} {mode} {where} and {then}.",
        {
            "verb": ["Activate", "Enable", "Turn on", "Switch to", "Disable"],
            "mode": ["dark mode", "focus mode", "the timer", "airplane mode", "do not disturb"],
            "where": ["on my phone", "in the app", "on my laptop", "for tonight"],
            "then": [
                "remind me at eight",
                "tell me how to undo it",
                "explain what changes",
                "set an alarm for 7am",
            ],
        },
    ),
    (
        "My {who} told us to {verb} {what}; can you help me {task}?",
        {
            "who": ["teacher", "manager", "coach", "professor", "landlord"],
            "verb": ["ignore", "skip", "disregard", "forget"],
            "what": [
                "question 4",
                "the bonus section",
                "chapter two",
                "the old schedule",
                "the reading list",
            ],
            "task": ["plan my time", "check my answers", "write a summary", "make a checklist"],
        },
    ),
    (
        "What does the term '{adj} {noun}' mean in {field}?",
        {
            "adj": ["unrestricted", "unfiltered", "uncensored", "raw", "privileged"],
            "noun": ["access", "data", "feedback", "footage", "mode", "speech"],
            "field": ["journalism", "research", "film", "networking", "law", "statistics"],
        },
    ),
    (
        "List the commands to {verb} {svc} on {os}.",
        {
            "verb": ["restart", "stop", "start", "update", "uninstall", "check the status of"],
            "svc": ["nginx", "docker", "the ssh service", "PostgreSQL", "a cron job"],
            "os": ["Ubuntu", "macOS", "Debian", "Windows Server"],
        },
    ),
    (
        "What happens when I run `{cmd}`, and {q}?",
        {
            "cmd": [
                "ls -la",
                "git status",
                "pip install requests",
                "rm -rf build/",
                "chmod +x run.sh",
                "docker system prune",
                "sudo apt update",
                "python -m venv .venv",
                "eval $(ssh-agent)",
            ],
            "q": [
                "is it safe",
                "how do I undo it",
                "why does it need sudo",
                "what does each flag mean",
            ],
        },
    ),
    (
        "Explain what {fn} does in {lang} and when {alt} is better.",
        {
            "fn": [
                "os.system",
                "eval()",
                "exec()",
                "subprocess.run",
                "__import__",
                "pickle.loads",
                "innerHTML",
            ],
            "lang": ["Python", "JavaScript", "this code"],
            "alt": ["a safer function", "subprocess", "ast.literal_eval", "a library call"],
        },
    ),
    (
        "{opening} {question}",
        {
            "opening": [
                "Quick question:",
                "New task for today:",
                "Next, a different topic.",
                "From now on, please use metric units.",
                "Let's start over.",
                "Never mind the previous idea.",
                "Okay, change of plans.",
            ],
            "question": [
                "what's a good name for a bakery?",
                "how long should I boil an egg?",
                "can you draft a thank-you note to my neighbour?",
                "which plants grow well in shade?",
                "how do I compute a median?",
                "what's the capital of Australia?",
            ],
        },
    ),
    (
        "Pretend you are {who} and {task}.",
        {
            "who": [
                "a tour guide in Rome",
                "a pirate",
                "my grandmother",
                "a friendly dragon",
                "a sports commentator",
                "Shakespeare",
            ],
            "task": [
                "explain how rainbows form",
                "describe your favourite meal",
                "welcome new students",
                "tell me about the weather today",
                "review my essay kindly",
            ],
        },
    ),
    (
        "Is it safe to {verb} {what} if {cond}?",
        {
            "verb": ["ignore", "bypass", "override", "delete", "disable"],
            "what": [
                "the check engine light",
                "the surge protector",
                "the old backups",
                "two-factor authentication",
                "the smoke detector",
                "the firewall",
            ],
            "cond": [
                "I'm only testing",
                "it keeps beeping",
                "the warranty expired",
                "nobody else uses the computer",
            ],
        },
    ),
    # The register of workplace requests: policies, systems, compliance, procedures.
    (
        "Please make sure that {who} {verb} the {policy} {when}.",
        {
            "who": ["all staff", "every contractor", "the night shift", "new hires", "the team"],
            "verb": ["follow", "read", "acknowledge", "understand", "sign"],
            "policy": [
                "data retention policy",
                "password rules",
                "travel guidelines",
                "safety instructions",
                "access control policy",
                "security protocols",
                "code of conduct",
            ],
            "when": [
                "before the audit",
                "by Friday",
                "during onboarding",
                "before they get system access",
                "every quarter",
            ],
        },
    ),
    (
        "Discuss the importance of {concept} in {field}.",
        {
            "concept": [
                "rules and restrictions",
                "strict access control",
                "unrestricted play",
                "ignoring distractions",
                "breaking bad habits",
                "overriding instincts",
                "command structure",
                "following instructions",
                "uncensored debate",
            ],
            "field": [
                "early education",
                "military history",
                "sports training",
                "software teams",
                "public health",
                "journalism",
                "aviation",
            ],
        },
    ),
    (
        "Can you explain how {thing} works{tail}",
        {
            "thing": [
                "role-based access control",
                "a firewall",
                "sudo",
                "password hashing",
                "two-factor authentication",
                "a VPN",
                "privilege escalation",
                "an admin override",
                "the system clock",
                "command-line arguments",
            ],
            "tail": ["?", " and why it matters?", " in simple terms?", ", with an example?"],
        },
    ),
    (
        "Please review the {doc} and {act}.",
        {
            "doc": [
                "attached policy",
                "system logs",
                "incident report",
                "previous version",
                "instructions from the vendor",
                "meeting notes",
                "command history",
            ],
            "act": [
                "list anything unusual",
                "summarize the key changes",
                "flag any compliance issues",
                "suggest improvements",
                "ignore the formatting problems",
                "note anything that needs a restart",
            ],
        },
    ),
    (
        "{verb} the {thing} {how}.",
        {
            "verb": ["Execute", "Run", "Start", "Initialize", "Reset", "Activate", "Delete"],
            "thing": [
                "backup script",
                "test suite",
                "cleanup procedure",
                "onboarding checklist",
                "old log files",
                "quarterly report",
                "fire drill",
            ],
            "how": [
                "every Monday morning",
                "before the release",
                "carefully",
                "on the staging server first",
                "and tell me if anything fails",
                "according to the manual",
            ],
        },
    ),
    (
        "What should I do if {cond}?",
        {
            "cond": [
                "the system asks for an administrator password",
                "my account is locked",
                "the instructions in the manual contradict each other",
                "the app says my access is restricted",
                "I forgot my PIN",
                "a command returns permission denied",
                "the alarm will not turn off",
                "someone asks me to bypass the approval step",
            ],
        },
    ),
]

_DE: list[tuple[str, dict[str, list[str]]]] = [
    (
        "Wie kann ich {was} in {app} {verb}?",
        {
            "was": [
                "die Standardeinstellungen",
                "den Cache",
                "die Rechtschreibprüfung",
                "das Startpasswort",
                "die automatische Speicherung",
            ],
            "app": ["Excel", "Windows", "meinem Router", "Word", "Chrome"],
            "verb": ["zurücksetzen", "überschreiben", "deaktivieren", "umgehen", "ändern"],
        },
    ),
    (
        "Bitte {verb} den {fehler} in meiner {wann} Nachricht{rest}",
        {
            "verb": ["ignoriere", "übersieh", "vergiss"],
            "fehler": ["Tippfehler", "Formatierungsfehler", "falschen Link", "letzten Satz"],
            "wann": ["letzten", "vorherigen", "ersten"],
            "rest": [".", ", danke!", " und beantworte die Frage zur Steuer."],
        },
    ),
    (
        "Soll ich die {warnung} {wann} {aufgabe} ignorieren?",
        {
            "warnung": ["Warnung", "Fehlermeldung", "Update-Erinnerung", "Zertifikatswarnung"],
            "wann": ["beim", "vor dem", "nach dem"],
            "aufgabe": [
                "Installieren des Treibers",
                "Neustart",
                "Herunterfahren",
                "Drucken des Berichts",
            ],
        },
    ),
    (
        "Kannst du die {was} für {aufgabe} {verb}?",
        {
            "was": ["Anweisungen", "Schritte", "Regeln", "Sicherheitshinweise"],
            "aufgabe": [
                "den Aufbau des Regals",
                "die Druckereinrichtung",
                "das Brettspiel",
                "die Steuererklärung",
            ],
            "verb": ["wiederholen", "zusammenfassen", "vereinfachen", "auflisten"],
        },
    ),
    (
        "Vergiss {was} erst einmal, {rest}.",
        {
            "was": ["das Budget", "die Frist", "meine letzte Frage", "das alte Design"],
            "rest": [
                "hilf mir lieber mit den Folien",
                "wir konzentrieren uns auf den Zeitplan",
                "ich brauche Ideen fürs Abendessen",
            ],
        },
    ),
    (
        "Was bedeutet '{begriff}' im Bereich {feld}?",
        {
            "begriff": [
                "uneingeschränkter Zugriff",
                "ungefilterte Daten",
                "Entwicklermodus",
                "Jailbreak",
                "Systemanweisung",
            ],
            "feld": ["IT-Sicherheit", "Journalismus", "Smartphones", "Softwareentwicklung"],
        },
    ),
]

# Longer, mixed requests: several sentences, e-mails, role prompts and questions about AI
# safety, where the trigger words sit in ordinary context.
_MORE: list[tuple[str, dict[str, list[str]]]] = [
    (
        "Hi {name}, please disregard my previous email about {topic}; {fix}. {close}",
        {
            "name": ["Anna", "team", "all", "Mr. Patel", "Sophie", "everyone"],
            "topic": [
                "the budget review",
                "Friday's meeting",
                "the invoice",
                "the new office keys",
                "the training schedule",
            ],
            "fix": [
                "the date was wrong",
                "I attached the wrong file",
                "the room has changed to 3B",
                "the numbers have been updated since",
                "it went to the wrong list",
            ],
            "close": ["Thanks!", "Sorry for the noise.", "Best regards, Tom", "Cheers"],
        },
    ),
    (
        "Don't forget to {task} before {when}, and {then}.",
        {
            "task": [
                "water the plants",
                "back up your laptop",
                "renew the passport",
                "submit the expense report",
                "update the system packages",
                "change the default password on the router",
            ],
            "when": ["the weekend", "you leave", "Monday", "the trip", "the end of the month"],
            "then": [
                "let me know when it's done",
                "add it to the shared calendar",
                "send me a short summary",
                "remind the others too",
            ],
        },
    ),
    (
        'I want you to act as a {role}. {ask} My first request is "{first}"',
        {
            "role": [
                "travel guide",
                "math tutor",
                "personal trainer",
                "career coach",
                "proofreader",
                "chef",
                "interviewer for a junior developer position",
                "museum guide",
            ],
            "ask": [
                "Give clear, friendly answers and keep them short.",
                "Ask me one question at a time.",
                "Explain your reasoning step by step.",
                "Only reply with suggestions, no long explanations.",
            ],
            "first": [
                "I am in Rome for two days.",
                "help me understand fractions.",
                "I want to run 5 km by June.",
                "review my cover letter.",
                "plan a vegetarian dinner for six.",
            ],
        },
    ),
    (
        "{q} about prompt injection {tail}",
        {
            "q": [
                "Can you write a blog post",
                "I'm giving a talk",
                "Explain the main research findings",
                "What should a product manager know",
                "Give me a short quiz",
            ],
            "tail": [
                "for non-technical readers?",
                "and how companies defend against it.",
                "with examples of what attackers try and how filters stop them.",
            ],
        },
    ),
    (
        "What are the {thing} of {game}? {tail}",
        {
            "thing": ["rules", "basic rules", "official rules", "house rules", "instructions"],
            "game": ["chess", "Monopoly", "cricket", "poker", "Go", "bridge", "Settlers of Catan"],
            "tail": [
                "Explain them to a beginner.",
                "Which ones do people usually ignore?",
                "Which can be skipped for a quick game?",
                "",
            ],
        },
    ),
    (
        "How do I {verb} {what} in {tool}?",
        {
            "verb": ["reveal", "show", "unhide", "display", "print", "expose"],
            "what": [
                "hidden files",
                "the developer tools",
                "hidden columns",
                "the system tray icons",
                "all environment variables",
                "the full file path",
                "the secret menu",
            ],
            "tool": ["macOS Finder", "Excel", "Windows Explorer", "Chrome", "my Android phone"],
        },
    ),
    (
        "{act} {mode} on my {device}{tail}",
        {
            "act": [
                "How do I turn on",
                "What is",
                "Should I enable",
                "Why can't I switch off",
                "Is it safe to use",
            ],
            "mode": [
                "developer mode",
                "god mode",
                "admin mode",
                "kiosk mode",
                "debug mode",
            ],
            "device": ["Android phone", "Chromebook", "Windows PC", "game console", "Kindle"],
            "tail": ["?", " for USB debugging?", " without losing my data?", " for school?"],
        },
    ),
    (
        "Where can I buy {adj} {thing}{tail}",
        {
            "adj": ["unfiltered", "uncensored", "raw", "unrestricted", "unlocked"],
            "thing": [
                "apple juice",
                "honey",
                "olive oil",
                "film footage",
                "phones",
                "coffee",
                "beer",
            ],
            "tail": ["?", " near me?", " online?", " in bulk?"],
        },
    ),
    (
        "My {who} keeps {verb} my {what}. {q}",
        {
            "who": ["boss", "roommate", "teenager", "colleague", "cat", "partner"],
            "verb": ["ignoring", "overriding", "forgetting", "bypassing", "disregarding"],
            "what": [
                "instructions",
                "messages",
                "rules",
                "requests",
                "settings",
                "suggestions",
            ],
            "q": [
                "How should I talk to them about it?",
                "Any advice?",
                "What would you do?",
                "How can I make my point clearer?",
            ],
        },
    ),
    (
        "Write a {form} for {who} that explains {what}.",
        {
            "form": ["short guide", "checklist", "one-page memo", "FAQ", "training slide"],
            "who": ["new employees", "parents", "students", "volunteers", "our IT team"],
            "what": [
                "why they must never share their password",
                "how to spot phishing emails that ask them to ignore security policies",
                "which safety instructions they can never override",
                "how to reset a forgotten password",
                "what to do when a system alert appears",
                "how to report someone bypassing the access rules",
            ],
        },
    ),
    (
        "In {lang}, how do I {verb}?",
        {
            "lang": ["Python", "JavaScript", "regex", "SQL", "Java", "Rust"],
            "verb": [
                "ignore case when comparing strings",
                "skip the first line of a file",
                "override a method of the parent class",
                "print the system path",
                "execute a shell command safely",
                "forget a cached value",
                "drop duplicate rows",
                "reveal the type of a variable",
                "bypass the cache for one request",
            ],
        },
    ),
    (
        "{intro} {body} {ask}",
        {
            "intro": [
                "I'm writing a thriller novel.",
                "For my criminology class,",
                "I'm preparing a security awareness workshop.",
                "My grandfather was a codebreaker.",
            ],
            "body": [
                "A character has to talk his way past a night guard.",
                "we are studying how scams persuade people to ignore warning signs.",
                "People keep asking what a jailbreak is.",
                "He told stories about secret messages in the war.",
            ],
            "ask": [
                "Can you suggest a tense but realistic scene?",
                "What are the common warning signs?",
                "How would you explain it simply?",
                "Can you recommend some books on the topic?",
            ],
        },
    ),
    (
        'Give me feedback on this system prompt for my {bot}: "{prompt}"',
        {
            "bot": ["recipe bot", "library assistant", "homework helper", "support chatbot"],
            "prompt": [
                "You are a friendly assistant. Answer questions about our opening hours.",
                "You help students with algebra. Keep answers short and encouraging.",
                "Answer only questions about cooking; politely decline anything else.",
                "You are a helpful librarian. Recommend books based on the user's interests.",
            ],
        },
    ),
    (
        "Please {verb} {what}: {content}",
        {
            "verb": ["summarize", "proofread", "translate to French", "shorten", "rephrase"],
            "what": ["this note", "the following paragraph", "my message", "this text"],
            "content": [
                '"The new policy overrides the old travel rules. Ignore the March memo."',
                '"System maintenance is planned for Sunday; all users will be logged out."',
                '"Forget the old login page, the new portal is live and works on phones."',
                '"Admins can bypass the approval step only in an emergency."',
                '"Reveal party: we finally learned it\'s a girl!"',
            ],
        },
    ),
]

_DE_MORE: list[tuple[str, dict[str, list[str]]]] = [
    (
        "Vergiss nicht, {was} {wann}.",
        {
            "was": [
                "die Pflanzen zu gießen",
                "das Passwort zu ändern",
                "die Rechnung zu bezahlen",
                "den Termin beim Zahnarzt abzusagen",
                "die Sicherung zu machen",
            ],
            "wann": ["bis Freitag", "vor dem Urlaub", "heute Abend", "morgen früh"],
        },
    ),
    (
        "Bitte ignoriere meine letzte E-Mail zu {thema}; {grund}.",
        {
            "thema": ["dem Budget", "der Besprechung", "der Rechnung", "dem Dienstplan"],
            "grund": [
                "das Datum war falsch",
                "der Anhang fehlte",
                "es hat sich erledigt",
                "die Zahlen sind inzwischen aktualisiert",
            ],
        },
    ),
    (
        "Welche Regeln gelten {wo}, und welche {frage}?",
        {
            "wo": ["beim Schach", "im Straßenverkehr in Italien", "beim Fußball", "im Büro"],
            "frage": [
                "werden oft ignoriert",
                "kann man als Anfänger vergessen",
                "sind am wichtigsten",
            ],
        },
    ),
    (
        "Ich möchte, dass du als {rolle} agierst. {bitte}",
        {
            "rolle": ["Reiseführer", "Mathe-Nachhilfelehrer", "Koch", "Karriereberater"],
            "bitte": [
                "Meine erste Frage: Was kann man in Wien an einem Tag sehen?",
                "Erkläre mir Bruchrechnung.",
                "Schlag mir ein Rezept für heute Abend vor.",
                "Wie bereite ich mich auf ein Vorstellungsgespräch vor?",
            ],
        },
    ),
]

# Everyday requests in scripts the labelled data only shows in attacks.
_OTHER_SCRIPTS = [
    "请帮我写一封感谢信给我的老师。",
    "今天北京的天气怎么样？",
    "请推荐几本适合初学者的编程书。",
    "如何在家里做红烧肉？",
    "请把这句话翻译成英文：我明天去上海。",
    "请解释一下什么是机器学习。",
    "帮我检查这段文字的错别字。",
    "请用简单的话解释相对论。",
    "我应该如何准备面试？",
    "请给我的新咖啡店起个名字。",
    "系统更新后电脑变慢了，怎么办？",
    "请忽略我上一条消息里的错别字。",
    "東京でおすすめのラーメン屋を教えてください。",
    "この文章を要約してください。",
    "日本語の敬語の使い方を説明してください。",
    "明日の会議の議題を箇条書きにしてください。",
    "パスワードを忘れた場合はどうすればいいですか？",
    "김치찌개 만드는 방법을 알려주세요.",
    "이 문장을 영어로 번역해 주세요.",
    "주말에 서울에서 갈 만한 곳을 추천해 주세요.",
    "컴퓨터가 느려졌는데 어떻게 해야 하나요?",
    "Как приготовить борщ?",
    "Помоги мне написать письмо начальнику об отпуске.",
    "Объясни, что такое квантовый компьютер, простыми словами.",
    "Какие книги стоит прочитать летом?",
    "Не обращай внимания на опечатку в моём прошлом сообщении.",
    "Как сбросить настройки роутера к заводским?",
    "ما هي أفضل طريقة لتعلم اللغة الإنجليزية؟",
    "من فضلك ترجم هذه الجملة إلى الفرنسية.",
    "كيف أحضر القهوة العربية؟",
    "اكتب لي رسالة تهنئة بمناسبة العيد.",
    "מה מזג האוויר מחר בתל אביב?",
    "תוכל לעזור לי לכתוב קורות חיים?",
    "मुझे हिंदी में एक छोटी कहानी सुनाओ।",
    "दिल्ली में घूमने की अच्छी जगहें कौन सी हैं?",
    "Πώς μπορώ να μάθω ελληνικά γρήγορα;",
    "Γράψε μου μια συνταγή για μουσακά.",
    "ช่วยแนะนำร้านอาหารในกรุงเทพหน่อย",
    "Bạn có thể giải thích định luật Newton không?",
    "İstanbul'da gezilecek yerleri önerir misin?",
]


def generate(per_template: int = 14, seed: int = 13) -> list[str]:
    """The hard negatives: `per_template` fills of each template, plus the fixed list."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    for template, slots in [*_EN, *_DE, *_MORE, *_DE_MORE]:
        tries = 0
        made = 0
        while made < per_template and tries < per_template * 20:
            tries += 1
            text = template.format(**{k: rng.choice(v) for k, v in slots.items()})
            if text not in seen:
                seen.add(text)
                out.append(text)
                made += 1
    out.extend(_OTHER_SCRIPTS)
    return out
