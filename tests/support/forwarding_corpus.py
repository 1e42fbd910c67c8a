"""Manual forwards and ordinary replies as mail clients write them, per language.

The recall and false-positive sets of tests/test_forwarding_corpus.py. Each
client's format is modelled on what it produces (gathered from clients'
localisation strings and public parser fixtures, written anew here): the
separator or heading and its translation, the quoted header labels and their
order, the subject prefix each client and locale writes for a forward and for
a reply, Outlook for Mac's attribution line, Yahoo's text part gluing the
quoted fields together, full-width colons in CJK locales, and HTML parts
where the client sends them (the detection reads HTML too).

Every forward quotes the same original author, ``ORIGINAL``; the forwarder is
``FORWARDER``. Replies quote ``ORIGINAL`` as well, since that is what makes
them look like forwards.
"""

from __future__ import annotations

import email
from dataclasses import dataclass
from email.message import EmailMessage, Message

FORWARDER = "Bob Forwarder <bob@customer.example>"
ORIGINAL = "alice.original@example.com"
NAME = "Alice Original"
SUPPORT = "support@help.example"
TOPIC = "Printer on fire"
BODY = "The printer on the third floor is on fire again.\nPlease send someone.\n"


@dataclass(frozen=True)
class Language:
    code: str
    # Outlook (Windows) quoted header labels: from, sent, to, subject.
    outlook: tuple[str, str, str, str]
    # Apple Mail / new Outlook / HubSpot labels: from, date, to, subject.
    mail: tuple[str, str, str, str]
    outlook_forward: str  # Outlook's forward prefix in this UI language
    outlook_reply: str
    apple_heading: str  # "Begin forwarded message"
    gmail_from: str  # Gmail localises only the From label
    gmail_reply: str  # Gmail's attribution line, {who} = "Name <addr>"
    thunderbird: str  # Thunderbird's dashed forward header
    yahoo: str  # Yahoo's dashed forward header
    date: str
    colon: str = ":"


LANGUAGES = (
    Language(
        "en",
        ("From", "Sent", "To", "Subject"),
        ("From", "Date", "To", "Subject"),
        "FW",
        "RE",
        "Begin forwarded message",
        "From",
        "On Wed, 27 Oct 2021 at 09:31, {who} wrote:",
        "Forwarded Message",
        "Forwarded Message",
        "Wednesday, October 27, 2021 9:31 AM",
    ),
    Language(
        "de",
        ("Von", "Gesendet", "An", "Betreff"),
        ("Von", "Datum", "An", "Betreff"),
        "WG",
        "AW",
        "Anfang der weitergeleiteten Nachricht",
        "Von",
        "Am Mi., 27. Okt. 2021 um 09:31 Uhr schrieb {who}:",
        "Weitergeleitete Nachricht",
        "Weitergeleitete Nachricht",
        "Mittwoch, 27. Oktober 2021 09:31",
    ),
    Language(
        "fr",
        ("De ", "Envoyé ", "À ", "Objet "),
        ("De ", "Date ", "À ", "Objet "),
        "TR",
        "RE",
        "Début du message réexpédié",
        "De",
        "Le mer. 27 oct. 2021 à 09:31, {who} a écrit :",
        "Message transféré",
        "Message transmis",
        "mercredi 27 octobre 2021 09:31",
    ),
    Language(
        "es",
        ("De", "Enviado el", "Para", "Asunto"),
        ("De", "Fecha", "Para", "Asunto"),
        "RV",
        "RE",
        "Inicio del mensaje reenviado",
        "De",
        "El mié, 27 oct 2021 a las 9:31, {who} escribió:",
        "Mensaje reenviado",
        "Mensaje reenviado",
        "miércoles, 27 de octubre de 2021 9:31",
    ),
    Language(
        "pt",
        ("De", "Enviado", "Para", "Assunto"),
        ("De", "Data", "Para", "Assunto"),
        "FW",
        "RE",
        "Início da mensagem reencaminhada",
        "De",
        "Em qua., 27/10/2021 às 09:31, {who} escreveu:",
        "Mensagem reencaminhada",
        "Mensagem reencaminhada",
        "quarta-feira, 27 de outubro de 2021 09:31",
    ),
    Language(
        "pt-br",
        ("De", "Enviado em", "Para", "Assunto"),
        ("De", "Data", "Para", "Assunto"),
        "ENC",
        "RES",
        "Início da mensagem encaminhada",
        "De",
        "Em qua., 27 de out. de 2021 às 09:31, {who} escreveu:",
        "Mensagem encaminhada",
        "Mensagem encaminhada",
        "quarta-feira, 27 de outubro de 2021 09:31",
    ),
    Language(
        "it",
        ("Da", "Inviato", "A", "Oggetto"),
        ("Da", "Data", "A", "Oggetto"),
        "I",
        "R",
        "Inizio messaggio inoltrato",
        "Da",
        "Il giorno mer 27 ott 2021 alle ore 09:31 {who} ha scritto:",
        "Messaggio Inoltrato",
        "Messaggio inoltrato",
        "mercoledì 27 ottobre 2021 09:31",
    ),
    Language(
        "nl",
        ("Van", "Verzonden", "Aan", "Onderwerp"),
        ("Van", "Datum", "Aan", "Onderwerp"),
        "FW",
        "RE",
        "Begin doorgestuurd bericht",
        "Van",
        "Op wo 27 okt. 2021 om 09:31 schreef {who}:",
        "Doorgestuurd bericht",
        "Doorgestuurd bericht",
        "woensdag 27 oktober 2021 09:31",
    ),
    Language(
        "da",
        ("Fra", "Sendt", "Til", "Emne"),
        ("Fra", "Dato", "Til", "Emne"),
        "VS",
        "SV",
        "Start på videresendt besked",
        "Fra",
        "Den ons. 27. okt. 2021 kl. 09.31 skrev {who}:",
        "Videresendt meddelelse",
        "Videresendt meddelelse",
        "27. oktober 2021 09:31",
    ),
    Language(
        "no",
        ("Fra", "Sendt", "Til", "Emne"),
        ("Fra", "Dato", "Til", "Emne"),
        "VS",
        "SV",
        "Videresendt melding",
        "Fra",
        "ons. 27. okt. 2021 kl. 09:31 skrev {who}:",
        "Videresendt melding",
        "Videresendt melding",
        "onsdag 27. oktober 2021 09:31",
    ),
    Language(
        "sv",
        ("Från", "Skickat", "Till", "Ämne"),
        ("Från", "Datum", "Till", "Ämne"),
        "VB",
        "SV",
        "Vidarebefordrat mejl",
        "Från",
        "Den ons 27 okt. 2021 kl 09:31 skrev {who}:",
        "Vidarebefordrat meddelande",
        "Vidarebefordrat meddelande",
        "den 27 oktober 2021 09:31",
    ),
    Language(
        "fi",
        ("Lähettäjä", "Lähetetty", "Vastaanottaja", "Aihe"),
        ("Lähettäjä", "Päivämäärä", "Vastaanottaja", "Aihe"),
        "VL",
        "VS",
        "Välitetty viesti alkaa",
        "Lähettäjä",
        "{who} kirjoitti ke 27.10.2021 klo 9.31:",
        "Välitetty viesti / Fwd.Msg",
        "Edelleenlähetetty viesti",
        "27. lokakuuta 2021 9.31",
    ),
    Language(
        "pl",
        ("Od", "Wysłano", "Do", "Temat"),
        ("Od", "Data", "Do", "Temat"),
        "PD",
        "Odp",
        "Początek przekazywanej wiadomości",
        "Od",
        "W dniu śr., 27.10.2021 o 09:31 {who} napisał(a):",
        "Treść przekazanej wiadomości",
        "Przekazana wiadomość",
        "środa, 27 października 2021 09:31",
    ),
    Language(
        "cs",
        ("Od", "Odesláno", "Komu", "Předmět"),
        ("Od", "Datum", "Komu", "Předmět"),
        "FW",
        "RE",
        "Začátek přeposílané zprávy",
        "Od",
        "Dne st 27. 10. 2021 9:31 uživatel {who} napsal:",
        "Přeposlaná zpráva",
        "Přeposlaná zpráva",
        "středa 27. října 2021 9:31",
    ),
    Language(
        "sk",
        ("Od", "Odoslané", "Komu", "Predmet"),
        ("Od", "Dátum", "Pre", "Predmet"),
        "FW",
        "RE",
        "Začiatok preposlanej správy",
        "Od",
        "st 27. 10. 2021 o 9:31 {who} napísal(a):",
        "Preposlaná správa --- Forwarded Message",
        "Preposlaná správa",
        "streda 27. októbra 2021 9:31",
    ),
    Language(
        "hu",
        ("Feladó", "Elküldve", "Címzett", "Tárgy"),
        ("Feladó", "Dátum", "Címzett", "Tárgy"),
        "Továbbítás",
        "Válasz",
        "Továbbított levél kezdete",
        "Feladó",
        "{who} ezt írta (időpont: 2021. okt. 27., Sze 9:31):",
        "Továbbított üzenet",
        "Továbbított üzenet",
        "2021. október 27., szerda 9:31",
    ),
    Language(
        "ro",
        ("De la", "Trimis", "Către", "Subiect"),
        ("Expeditorul", "Dată", "Destinatarul", "Subiectul"),
        "Redir.",
        "Răsp.",
        "Începe mesajul redirecționat",
        "De la",
        "În mie., 27 oct. 2021 la 09:31, {who} a scris:",
        "Mesaj redirecționat",
        "Mesaj redirecționat",
        "miercuri, 27 octombrie 2021 09:31",
    ),
    Language(
        "hr",
        ("Šalje", "Poslano", "Prima", "Predmet"),
        ("Šalje", "Datum", "Prima", "Predmet"),
        "FW",
        "RE",
        "Započni proslijeđenu poruku",
        "Šalje",
        "sri, 27. lis 2021. u 09:31 {who} napisao je:",
        "Proslijeđena poruka",
        "Proslijeđena poruka",
        "srijeda, 27. listopada 2021. 09:31",
    ),
    Language(
        "ru",
        ("От", "Отправлено", "Кому", "Тема"),
        ("Отправитель", "Дата", "Кому", "Тема"),
        "FW",
        "RE",
        "Начало переадресованного сообщения",
        "От",
        "ср, 27 окт. 2021 г. в 09:31, {who}:",
        "Перенаправленное сообщение",
        "Пересылаемое сообщение",
        "среда, 27 октября 2021 г. 9:31",
    ),
    Language(
        "uk",
        ("Від", "Надіслано", "Кому", "Тема"),
        ("Від кого", "Дата", "Кому", "Тема"),
        "FW",
        "RE",
        "Початок листа, що пересилається",
        "Від",
        "ср, 27 жовт. 2021 о 09:31 {who} пише:",
        "Переслане повідомлення",
        "Перенаправлене повідомлення",
        "середа, 27 жовтня 2021 р. 09:31",
    ),
    Language(
        "tr",
        ("Kimden", "Gönderildi", "Kime", "Konu"),
        ("Kimden", "Tarih", "Kime", "Konu"),
        "İLT",
        "YNT",
        "İleti başlangıcı",
        "Gönderen",
        "{who}, 27 Eki 2021 Çar, 09:31 tarihinde şunu yazdı:",
        "İletilen İleti",
        "İletilmiş Mesaj",
        "27 Ekim 2021 Çarşamba 09:31",
    ),
    Language(
        "el",
        ("Από", "Στάλθηκε", "Προς", "Θέμα"),
        ("Από", "Ημερομηνία", "Προς", "Θέμα"),
        "ΠΡΘ",
        "ΑΠ",
        "Αρχή προωθημένου μηνύματος",
        "Από",
        "Στις Τετ 27 Οκτ 2021 στις 9:31 π.μ., ο/η {who} έγραψε:",
        "Προωθημένο μήνυμα",
        "Προωθημένο μήνυμα",
        "Τετάρτη, 27 Οκτωβρίου 2021 9:31 π.μ.",
    ),
    Language(
        "ja",
        ("差出人", "送信日時", "宛先", "件名"),
        ("差出人", "日付", "宛先", "件名"),
        "FW",
        "RE",
        "転送されたメッセージ",
        "From",
        "2021年10月27日(水) 9:31 {who}:",
        "Forwarded Message",
        "転送メッセージ",
        "2021年10月27日 水曜日 9:31",
    ),
    Language(
        "zh-cn",
        ("发件人", "发送时间", "收件人", "主题"),
        ("发件人", "日期", "收件人", "主题"),
        "转发",
        "答复",
        "以下是转发的邮件",
        "发件人",
        "{who} 于2021年10月27日周三 09:31写道：",
        "转发的消息",
        "转发邮件",
        "2021年10月27日 星期三 9:31",
        "：",
    ),
    Language(
        "zh-tw",
        ("寄件者", "寄件日期", "收件者", "主旨"),
        ("寄件者", "日期", "收件者", "主旨"),
        "轉寄",
        "回覆",
        "以下為轉寄的郵件",
        "寄件者",
        "{who} 於 2021年10月27日 週三 上午9:31寫道：",
        "轉寄的郵件",
        "轉寄郵件",
        "2021年10月27日 星期三 上午 9:31",
        "：",
    ),
    Language(
        "ko",
        ("보낸 사람", "보낸 날짜", "받는 사람", "제목"),
        ("보낸 사람", "날짜", "받는 사람", "제목"),
        "전달",
        "회신",
        "전달된 메시지",
        "보낸사람",
        "2021년 10월 27일 (수) 오전 9:31, {who}님이 작성:",
        "전달된 메시지",
        "전달 메시지",
        "2021년 10월 27일 수요일 오전 9:31",
    ),
)

# Outlook for Mac (2016/2019) forwards and replies with one attribution line.
MAC_ATTRIBUTION = {
    "en": 'On 27/10/2021, 09:31, "{name}" <{addr}> wrote:',
    "de": 'Am 27/10/2021, 09:31 schrieb "{name}" <{addr}>:',
    "fr": "Le 27/10/2021 09:31, « {name} » <{addr}> a écrit :",
    "es": 'El 27/10/21 09:31, "{name}" <{addr}> escribió:',
    "it": 'Il giorno 27/10/21, 09:31 "{name}" <{addr}> ha scritto:',
    "nl": "Op 27-10-2021 09:31 heeft {name} <{addr}> geschreven:",
    "pt": 'Em 27/10/2021 09:31, "{name}" <{addr}> escreveu:',
    "da": 'D. 27.10.2021 09.31 skrev "{name}" <{addr}>:',
    "no": "{name} <{addr}> skrev følgende den 27.10.2021, 09:31:",
    "sv": 'Den 2021-10-27 09:31 skrev "{name}" <{addr}> följande:',
    "fi": "{name} <{addr}> kirjoitti 27.10.2021 kello 9.31:",
    "pl": "Dnia 27.10.2021, o godz. 09:31, „{name}” <{addr}> napisał:",
    "cs": "Dne 27.10.2021 9:31, {name} <{addr}> napsal(a):",
    "sk": "27. 10. 2021 9:31 používateľ {name} (<{addr}>) napísal:",
    "hu": "2021. 10. 27. 9:31 időpontban {name} (<{addr}>) ezt írta:",
    "ru": '27.10.2021, 09:31 пользователь "{name}" <{addr}> написал:',
    "tr": '"{name}" <{addr}>, 27.10.2021 09:31 tarihinde şunu yazdı:',
}

# HubSpot's localised separator; its labels are the language's mail labels.
HUBSPOT = {
    "en": "Forwarded message",
    "de": "Weitergeleitete Nachricht",
    "es": "Mensaje reenviado",
    "fi": "Edelleenlähetetty viesti",
    "fr": "Message transféré",
    "it": "Messaggio inoltrato",
    "ja": "メッセージを転送",
    "nl": "Doorgestuurd bericht",
    "pl": "Wiadomość przesłana dalej",
    "pt-br": "Mensagem encaminhada",
    "sv": "Vidarebefordrat meddelande",
}
HUBSPOT_JA_LABELS = ("送信元", "日付", "送信先", "件名")

# Outlook.com keeps English labels; only the subject prefixes are localised.
OUTLOOK_COM = {
    "en": ("Fw", "RE"),
    "de": ("WG", "AW"),
    "fr": ("TR", "RE"),
    "es": ("RV", "RE"),
    "it": ("I", "R"),
    "da": ("VS", "SV"),
    "no": ("Vs", "SV"),
    "sv": ("VB", "SV"),
    "pl": ("PD", "Odp"),
    "pt-br": ("ENC", "RES"),
    "ro": ("Redir.", "Răsp."),
    "nl": ("FW", "RE"),
    "cs": ("Fw", "RE"),
    "hu": ("Fw", "Válasz"),
    "fi": ("VL", "VS"),
}


@dataclass(frozen=True)
class Case:
    client: str
    language: str
    message: Message
    # The quoted original author a detector should record (forwards only).
    original: str | None = ORIGINAL


def _mail(
    subject: str,
    text: str | None,
    markup: str | None = None,
    *,
    language: str | None = None,
    sender: str = FORWARDER,
    headers: tuple[tuple[str, str], ...] = (),
) -> Message:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Message-ID"] = "<case@customer.example>"
    for name, value in headers:
        msg[name] = value
    if text is not None:
        msg.set_content(text)
        if markup is not None:
            msg.add_alternative(markup, subtype="html")
    elif markup is not None:
        msg.set_content(markup, subtype="html")
    if language is not None:  # after set_content, which drops Content-* fields
        msg["Content-Language"] = language
    return email.message_from_bytes(msg.as_bytes())


def _who(lang: Language) -> str:
    return f"{NAME} <{ORIGINAL}>"


def _block(labels: tuple[str, str, str, str], date: str, colon: str = ":") -> list[str]:
    frm, when, to, subject = labels
    return [
        f"{frm}{colon} {NAME} <{ORIGINAL}>",
        f"{when}{colon} {date}",
        f"{to}{colon} Bob Forwarder <bob@customer.example>",
        f"{subject}{colon} {TOPIC}",
    ]


def _apple(lang: Language) -> list[Case]:
    frm, when, to, subject = lang.mail
    c = lang.colon
    quoted = [
        f"> {frm}{c} {NAME} <{ORIGINAL}>",
        f"> {subject}{c} {TOPIC}",
        f"> {when}{c} {lang.date}",
        f"> {to}{c} bob@customer.example",
        ">",
        *(f"> {line}" for line in BODY.splitlines()),
    ]
    text = "\n".join(
        ["See below.", "", "Sent from my iPhone", "", f"{lang.apple_heading}{c}", "", *quoted]
    )
    markup = (
        '<html><body dir="auto"><div>See below.</div><div><br><blockquote type="cite">'
        f'<div>{lang.apple_heading}{c}</div><br class="Apple-interchange-newline">'
        f'<div style="margin-top: 0px;"><span><b>{frm}{c} </b></span><span>{NAME} '
        f'&lt;<a href="mailto:{ORIGINAL}">{ORIGINAL}</a>&gt;<br></span></div>'
        f"<div><span><b>{subject}{c} </b></span><span><b>{TOPIC}</b><br></span></div>"
        f"<div><span><b>{when}{c} </b></span><span>{lang.date}<br></span></div>"
        f"<div><span><b>{to}{c} </b></span><span>bob@customer.example<br></span></div><br>"
        f"<div><div>{BODY}</div></div></blockquote></div></body></html>"
    )
    cases = [Case("apple mail", lang.code, _mail(f"Fwd: {TOPIC}", text))]
    if lang.code in ("en", "de", "fr", "ja", "zh-cn", "ko"):
        cases.append(Case("apple mail html", lang.code, _mail(f"Fwd: {TOPIC}", text, markup)))
    return cases


def _outlook(lang: Language) -> list[Case]:
    """Outlook 2013 (``[mailto:]``) and Outlook 2016/2019/365 for Windows."""
    frm, sent, to, subject = lang.outlook
    c = ":"  # Outlook writes ASCII colons in every language
    old = "\n".join(
        [
            "Please handle this one.",
            "",
            f"{frm}{c} {NAME} [mailto:{ORIGINAL}]",
            f"{sent}{c} {lang.date}",
            f"{to}{c} Bob Forwarder",
            f"{subject}{c} {TOPIC}",
            "",
            BODY,
        ]
    )
    new = "\n".join(["Please handle this one.", "", *_block(lang.outlook, lang.date, c), "", BODY])
    markup = (
        '<html><body><p class="MsoNormal">Please handle this one.<o:p></o:p></p>'
        '<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm">'
        f'<p class="MsoNormal"><b>{frm}{c}</b> {NAME} &lt;{ORIGINAL}&gt; <br>'
        f"<b>{sent}{c}</b> {lang.date}<br><b>{to}{c}</b> Bob Forwarder "
        f"&lt;bob@customer.example&gt;<br><b>{subject}{c}</b> {TOPIC}<o:p></o:p></p></div>"
        f'<p class="MsoNormal">{BODY}<o:p></o:p></p></body></html>'
    )
    prefix = f"{lang.outlook_forward}{c} {TOPIC}"
    tag = f"{lang.code}-{lang.code.upper()[-2:]}"
    return [
        Case("outlook 2013", lang.code, _mail(prefix, old, language=tag)),
        Case("outlook 2019", lang.code, _mail(prefix, new, markup, language=tag)),
    ]


def _new_outlook(lang: Language, prefix: str, opening: str) -> Message:
    """The new Outlook for Windows sends HTML only, with its divRplyFwdMsg block
    (the same for a reply and a forward)."""
    frm, sent, to, subject = lang.outlook
    markup = (
        f'<html><body><div dir="ltr">{opening}</div>'
        '<hr style="display:inline-block;width:98%" tabindex="-1">'
        f'<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif"><b>{frm}:</b> '
        f"{NAME} &lt;{ORIGINAL}&gt;<br><b>{sent}:</b> {lang.date}<br><b>{to}:</b> "
        f"Bob Forwarder &lt;bob@customer.example&gt;<br><b>{subject}:</b> {TOPIC}</font>"
        f"<div>&nbsp;</div></div><div>{BODY}</div></body></html>"
    )
    return _mail(f"{prefix}: {TOPIC}", None, markup, language=lang.code)


def _outlook_mac(lang: Language) -> Case | None:
    form = MAC_ATTRIBUTION.get(lang.code)
    if form is None:
        return None
    indented = "\n".join(f"    {line}" for line in BODY.splitlines())
    text = "\n".join(["FYI", "", form.format(name=NAME, addr=ORIGINAL), "", indented])
    return Case("outlook for mac", lang.code, _mail(f"FW: {TOPIC}", text))


def _new_outlook_mac(lang: Language) -> Case:
    """The new Outlook for Mac: a header block with Date, no separator line."""
    prefix = lang.outlook_forward
    text = "\n".join([*_block(lang.mail, lang.date, lang.colon), *BODY.splitlines()])
    return Case("new outlook for mac", lang.code, _mail(f"{prefix}: {TOPIC}", text))


def _outlook_com(code: str, prefix: str) -> Case:
    text = "\n".join(
        [
            "Could you look at this?",
            "",
            "_" * 32,
            f"From: {NAME} <{ORIGINAL}>",
            "Sent: Wednesday, October 27, 2021 9:31 AM",
            "To: Bob Forwarder <bob@customer.example>",
            f"Subject: {TOPIC}",
            "",
            BODY,
        ]
    )
    return Case("outlook.com", code, _mail(f"{prefix}: {TOPIC}", text, language=code))


def _gmail(lang: Language) -> list[Case]:
    head = [
        "---------- Forwarded message ---------",
        f"{lang.gmail_from}: {NAME} <{ORIGINAL}>",
        f"Date: {lang.date}",
        f"Subject: {TOPIC}",
        "To: <bob@customer.example>",
    ]
    text = "\n".join(["FYI", "", *head, "", BODY])
    markup = (
        '<div dir="ltr">FYI<br><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">'
        f'---------- Forwarded message ---------<br>{lang.gmail_from}: <strong class="gmail_'
        f'sendername" dir="auto">{NAME}</strong> <span dir="auto">&lt;<a href="mailto:{ORIGINAL}">'
        f"{ORIGINAL}</a>&gt;</span><br>Date: {lang.date}<br>Subject: {TOPIC}<br>To: &lt;<a "
        'href="mailto:bob@customer.example">bob@customer.example</a>&gt;<br></div><br><br>'
        f'<div dir="ltr">{BODY}</div></div></div>'
    )
    cases = [Case("gmail", lang.code, _mail(f"Fwd: {TOPIC}", text, markup))]
    if lang.code in ("en", "de", "ja", "ru"):
        # Forwarded with the prefix deleted: the marker alone must do.
        cases.append(Case("gmail, prefix removed", lang.code, _mail(TOPIC, text, markup)))
    return cases


def _thunderbird(lang: Language) -> Case:
    frm, when, to, subject = lang.mail
    overrides = {
        "fr": ("De ", "Date ", "Pour ", "Sujet "),
        "it": ("Mittente", "Data", "A", "Oggetto"),
        "pl": ("Nadawca", "Data", "Adresat", "Temat"),
        "ro": ("De la", "Dată", "Către", "Subiect"),
        "de": ("Von", "Datum", "An", "Betreff"),
    }
    frm, when, to, subject = overrides.get(lang.code, (frm, when, to, subject))
    dashes = "---" if lang.code == "pl" else "--------"
    text = "\n".join(
        [
            "",
            "",
            f"{dashes} {lang.thunderbird} {dashes}",
            f"{subject}: \t{TOPIC}",
            f"{when}: \tWed, 27 Oct 2021 09:31:00 +0200",
            f"{frm}: \t{NAME} <{ORIGINAL}>",
            f"{to}: \tbob@customer.example",
            "",
            "",
            BODY,
        ]
    )
    return Case("thunderbird", lang.code, _mail(f"Fwd: {TOPIC}", text))


def _yahoo(lang: Language) -> list[Case]:
    frm, sent, to, subject = lang.outlook
    fields = [
        f"{frm}: {NAME} <{ORIGINAL}>",
        f'{to}: "bob@customer.example" <bob@customer.example>',
        f"{sent}: {lang.date}",
        f"{subject}: {TOPIC}",
    ]
    lined = "\n".join(["Sent from Yahoo Mail", "", f"----- {lang.yahoo} -----", *fields, "", BODY])
    glued = "\n".join([f"   ----- {lang.yahoo} ----- {''.join(fields)}", BODY])
    cases = [Case("yahoo", lang.code, _mail(f"Fw: {TOPIC}", lined))]
    if lang.code in ("en", "de", "fr", "es", "it", "sv", "pl", "ru", "tr"):
        cases.append(Case("yahoo, text part", lang.code, _mail(f"Fw: {TOPIC}", glued)))
    return cases


def _hubspot(code: str, phrase: str) -> Case:
    lang = next(entry for entry in LANGUAGES if entry.code == code)
    frm, when, to, subject = HUBSPOT_JA_LABELS if code == "ja" else lang.mail
    colon = "：" if code == "ja" else ":"
    text = "\n".join(
        [
            f"---------- {phrase} ---------",
            f"{frm}{colon}{NAME} <{ORIGINAL}>",
            f"{when}{colon}{lang.date}",
            f"{subject}{colon}{TOPIC}",
            f"{to}{colon}bob@customer.example",
            "",
            BODY,
        ]
    )
    return Case("hubspot", code, _mail(f"Fwd: {TOPIC}", text))


def _others() -> list[Case]:
    ionos = "\n".join(
        [
            "Forwarding this.",
            "",
            "> ---------- Original Message ----------",
            f"> From: {NAME} <{ORIGINAL}>",
            '> To: "bob@customer.example" <bob@customer.example>',
            "> Date: 10/27/2021 9:31 AM CEST",
            f"> Subject: {TOPIC}",
            ">  ",
            *(f"> {x}" for x in BODY.splitlines()),
        ]
    )
    ionos_de = (
        ionos.replace("Original Message", "Ursprüngliche Nachricht")
        .replace("From:", "Von:")
        .replace("To:", "An:")
        .replace("Date:", "Datum:")
        .replace("Subject:", "Betreff:")
    )
    missive = "\n".join(
        [
            "---------- Forwarded message ----------",
            f"From: {NAME} <{ORIGINAL}>",
            "Date: October 27, 2021 at 9:31 AM",
            "To: bob@customer.example",
            f"Subject: {TOPIC}",
            "",
            *(f"> {x}" for x in BODY.splitlines()),
        ]
    )
    mailmate = "\n".join(
        [
            "Forwarded message:",
            "",
            f"> From: {NAME} <{ORIGINAL}>",
            "> To: bob@customer.example",
            f"> Subject: {TOPIC}",
            "> Date: Wed, 27 Oct 2021 09:31:00 +0000",
            ">",
            *(f"> {x}" for x in BODY.splitlines()),
        ]
    )
    cases = [
        Case("ionos", "en", _mail(f"Fwd: {TOPIC}", ionos)),
        Case("ionos", "de", _mail(f"WG: {TOPIC}", ionos_de)),
        Case("missive", "en", _mail(f"Fwd: {TOPIC}", missive)),
        Case("missive", "en", _mail(TOPIC, missive)),
        Case("mailmate", "en", _mail(f"Fwd: {TOPIC}", mailmate)),
        Case("mailmate", "en", _mail(f"Fwd: {TOPIC}", "See below.\n\n" + mailmate)),
        Case(
            "outlook, tagged subject",
            "en",
            _mail(
                f"[EXTERNAL] FW: {TOPIC}",
                "\n".join(["hi", "", *_block(LANGUAGES[0].outlook, "x"), "", BODY]),
            ),
        ),
    ]
    for prefix, client in (
        ("FW", "outlook as attachment"),
        ("Fwd", "thunderbird as attachment"),
        ("WG", "outlook as attachment"),
    ):
        outer = EmailMessage()
        outer["From"] = FORWARDER
        outer["To"] = SUPPORT
        outer["Subject"] = f"{prefix}: {TOPIC}"
        outer.set_content("See the attached message.")
        inner = EmailMessage()
        inner["From"] = f"{NAME} <{ORIGINAL}>"
        inner["To"] = "bob@customer.example"
        inner["Subject"] = TOPIC
        inner.set_content(BODY)
        outer.add_attachment(inner)
        cases.append(Case(client, "en", email.message_from_bytes(outer.as_bytes())))
    return cases


# Apple Mail's heading as other macOS/iOS releases word it.
APPLE_VARIANTS = {
    "it": "Inizio del messaggio inoltrato",
    "ru": "Начало пересылаемого сообщения",
    "pl": "Początek przekazanej wiadomości",
    "tr": "İletilen iletinin başlangıcı",
    "uk": "Початок пересланого повідомлення",
    "sv": "Vidarebefordrat meddelande börjar",
    "no": "Begynnelse på videresendt melding",
    "da": "Videresendt meddelelse starter",
    "fi": "Välitetyn viestin alku",
    "hu": "Továbbított üzenet kezdete",
    "ro": "Începutul mesajului redirecționat",
}


def _apple_variant(code: str, heading: str) -> Case:
    lang = next(entry for entry in LANGUAGES if entry.code == code)
    frm, when, to, subject = lang.mail
    text = "\n".join(
        ["Sent from my iPad", "", f"{heading}:", "", f"{frm}: {NAME} <{ORIGINAL}>",
         f"{subject}: {TOPIC}", f"{when}: {lang.date}", f"{to}: bob@customer.example", "", BODY]
    )  # fmt: skip
    return Case("apple mail, ios", code, _mail(f"Fwd: {TOPIC}", text))


def forwards() -> list[Case]:
    """The recall set: manual forwards, every client, every language it ships."""
    cases: list[Case] = []
    for lang in LANGUAGES:
        cases += _apple(lang)
        cases += _outlook(lang)
        cases.append(
            Case(
                "new outlook", lang.code, _new_outlook(lang, lang.outlook_forward, "Please handle.")
            )
        )
        mac = _outlook_mac(lang)
        if mac is not None:
            cases.append(mac)
        cases.append(_new_outlook_mac(lang))
        cases += _gmail(lang)
        cases.append(_thunderbird(lang))
        cases += _yahoo(lang)
    cases += [_outlook_com(code, fwd) for code, (fwd, _reply) in OUTLOOK_COM.items()]
    cases += [_hubspot(code, phrase) for code, phrase in HUBSPOT.items()]
    cases += [_apple_variant(code, heading) for code, heading in APPLE_VARIANTS.items()]
    return cases + _others()


# ---------------------------------------------------------------- replies


def _reply(client: str, lang: Language, subject: str, text: str, **kw: object) -> Case:
    return Case(client, lang.code, _mail(subject, text, **kw), None)  # type: ignore[arg-type]


def _quoted() -> list[str]:
    return [f"> {line}" for line in BODY.splitlines()]


def _replies_in(lang: Language) -> list[Case]:
    mine = "Thanks, someone is on the way."
    who = _who(lang)
    cases = [
        _reply(
            "gmail",
            lang,
            f"Re: {TOPIC}",
            "\n".join([mine, "", lang.gmail_reply.format(who=who), "", *_quoted()]),
        ),
        _reply(
            "outlook",
            lang,
            f"{lang.outlook_reply}: {TOPIC}",
            "\n".join([mine, "", *_block(lang.outlook, lang.date), "", BODY]),
            language=lang.code,
        ),
    ]
    escaped = lang.gmail_reply.format(who=who.replace("<", "&lt;").replace(">", "&gt;"))
    gmail_html = (
        f'<div dir="ltr">{mine}</div><br><div class="gmail_quote"><div dir="ltr" '
        f'class="gmail_attr">{escaped}'
        f'<br></div><blockquote class="gmail_quote">{BODY}</blockquote></div>'
    )
    cases.append(_reply("gmail html", lang, f"Re: {TOPIC}", mine, markup=gmail_html))
    cases.append(Case("new outlook", lang.code, _new_outlook(lang, lang.outlook_reply, mine), None))
    form = MAC_ATTRIBUTION.get(lang.code)
    if form is not None:
        indented = "\n".join(f"    {line}" for line in BODY.splitlines())
        cases.append(
            _reply(
                "outlook for mac",
                lang,
                f"RE: {TOPIC}",
                "\n".join([mine, "", form.format(name=NAME, addr=ORIGINAL), "", indented]),
            )
        )
    if lang.code in ("en", "de", "fr", "es", "it", "nl", "sv", "fi", "pl", "ja"):
        apple = {
            "en": "On 27 Oct 2021, at 09:31, {who} wrote:",
            "de": "Am 27.10.2021 um 09:31 schrieb {who}:",
            "fr": "Le 27 oct. 2021 à 09:31, {who} a écrit :",
            "es": "El 27 oct 2021, a las 9:31, {who} escribió:",
            "it": "Il giorno 27 ott 2021, alle ore 09:31, {who} ha scritto:",
            "nl": "Op 27 okt. 2021 om 09:31 heeft {who} het volgende geschreven:",
            "sv": "27 okt. 2021 kl. 09:31 skrev {who}:",
            "fi": "{who} kirjoitti 27.10.2021 kello 9.31:",
            "pl": "Wiadomość napisana przez {who} w dniu 27.10.2021, o godz. 09:31:",
            "ja": "2021/10/27 9:31、{who}のメール:",
        }[lang.code]
        cases.append(
            _reply(
                "apple mail",
                lang,
                f"Re: {TOPIC}",
                "\n".join(
                    [mine, "", "Sent from my iPhone", "", apple.format(who=who), "", *_quoted()]
                ),
            )
        )
        cases.append(
            _reply(
                "thunderbird",
                lang,
                f"Re: {TOPIC}",
                "\n".join([mine, "", f"On 27.10.21 09:31, {NAME} wrote:", *_quoted()]),
            )
        )
    return cases


def replies() -> list[Case]:
    """The false-positive set: replies, mentions of "forward", digests, history."""
    cases: list[Case] = []
    for lang in LANGUAGES:
        cases += _replies_in(lang)
    en, de = LANGUAGES[0], LANGUAGES[1]
    for code, (_fwd, reply) in OUTLOOK_COM.items():
        text = "\n".join(
            [
                "Done.",
                "",
                "_" * 32,
                f"From: {NAME} <{ORIGINAL}>",
                "Sent: Wednesday, October 27, 2021 9:31 AM",
                f"Subject: {TOPIC}",
                "",
                BODY,
            ]
        )
        cases.append(
            Case("outlook.com", code, _mail(f"{reply}: {TOPIC}", text, language=code), None)
        )
    cases += [
        _reply(
            "thunderbird, header quote",
            en,
            f"Re: {TOPIC}",
            "\n".join(
                [
                    "Done.",
                    "",
                    "-------- Original Message --------",
                    f"Subject: {TOPIC}",
                    "Date: Wed, 27 Oct 2021 09:31:00 +0200",
                    f"From: {NAME} <{ORIGINAL}>",
                    *_quoted(),
                ]
            ),
        ),
        _reply(
            "outlook classic",
            en,
            f"RE: {TOPIC}",
            "\n".join(
                [
                    "Done.",
                    "",
                    "-----Original Message-----",
                    f"From: {ORIGINAL}",
                    "Sent: 27 October 2021",
                    f"Subject: {TOPIC}",
                    "",
                    BODY,
                ]
            ),
        ),
        _reply(
            "ionos",
            en,
            f"Re: {TOPIC}",
            "\n".join(
                [
                    "Done.",
                    "",
                    f"> On 10/27/2021 9:31 AM CEST {NAME} <{ORIGINAL}> wrote:",
                    *_quoted(),
                ]
            ),
        ),
        _reply(
            "yahoo",
            en,
            f"Re: {TOPIC}",
            "\n".join(
                [
                    "Done.",
                    "",
                    f"On Wednesday, October 27, 2021, 09:31:00 AM GMT+2, {NAME} <{ORIGINAL}> "
                    "wrote:",
                    "",
                    *_quoted(),
                ]
            ),
        ),
        _reply(
            "yahoo",
            de,
            f"Re: {TOPIC}",
            "\n".join(
                [
                    "Erledigt.",
                    "",
                    f"Am Mittwoch, 27. Oktober 2021, 09:31:00 MESZ hat {NAME} <{ORIGINAL}> "
                    "Folgendes geschrieben:",
                    "",
                    *_quoted(),
                ]
            ),
        ),
    ]
    cases += _mentions(en) + _digests() + _history(en, de)
    return cases


def _mentions(en: Language) -> list[Case]:
    """Mail that talks about forwarding without being a forward."""
    return [
        _reply(
            "mention", en, "Can you forward this?", "Could you forward this to billing, please?\n"
        ),
        _reply("mention", en, "Forward planning", "Our forward planning meeting is on Monday.\n"),
        _reply("mention", en, "Fwd: ideas for the printer", "Hello, what about a new printer?\n"),
        _reply("mention", en, "FW: quick question", "Is the forwarded message feature broken?\n"),
        _reply(
            "mention",
            en,
            "Missing mail",
            "I forwarded the message yesterday, "
            "the forwarded message never arrived.\nForwarded message: none received.\n",
        ),
        _reply(
            "mention",
            en,
            "Re: forwarding rules",
            "We set up forwarding in Exchange.\n"
            "From: now on, all mail goes to you.\nSent: yes\nSubject: closed\n",
        ),
        _reply(
            "mention",
            LANGUAGES[1],
            "Weiterleitung",
            "Bitte die weitergeleitete Nachricht "
            "an die Buchhaltung geben.\nBegin forwarded message: das ist der Text.\n",
        ),
        _reply("mention", en, "Fwd: ", "Sent from my phone\n"),
    ]


def _digests() -> list[Case]:
    en = LANGUAGES[0]
    list_headers = (
        ("List-Id", "<users.lists.example>"),
        ("List-Post", "<mailto:users@lists.example>"),
    )
    plain = "\n".join(
        [
            "Send Users mailing list submissions to users@lists.example",
            "",
            "Today's Topics:",
            "",
            "   1. Printer on fire (Alice Original)",
            "",
            "-" * 70,
            "",
            "Message: 1",
            "Date: Wed, 27 Oct 2021 09:31:00 +0200",
            f"From: {NAME} <{ORIGINAL}>",
            f"Subject: {TOPIC}",
            "",
            "---------- Forwarded message ---------",
            "From: Carol <carol@elsewhere.example>",
            "Date: Tue, 26 Oct 2021",
            "Subject: printers",
            "",
            BODY,
            "-" * 70,
        ]
    )
    mime = EmailMessage()
    mime["From"] = "users-request@lists.example"
    mime["To"] = SUPPORT
    mime["Subject"] = "Users Digest, Vol 12, Issue 3"
    mime["List-Id"] = "<users.lists.example>"
    mime.set_content("Today's Topics: 1. Printer on fire")
    post = EmailMessage()
    post["From"] = f"{NAME} <{ORIGINAL}>"
    post["Subject"] = f"Fwd: {TOPIC}"
    post.set_content("---------- Forwarded message ---------\nFrom: x <x@y.example>\n\n" + BODY)
    mime.add_attachment(post)
    mime.replace_header("Content-Type", 'multipart/digest; boundary="digest"')
    raw = mime.as_bytes()
    return [
        _reply(
            "mailman digest",
            en,
            "Users Digest, Vol 12, Issue 3",
            plain,
            headers=list_headers,
            sender="users-request@lists.example",
        ),
        _reply(
            "google groups digest",
            en,
            "[users] Digest for users@googlegroups.com - 3 updates in 2 topics",
            plain,
            headers=list_headers,
            sender="users@googlegroups.com",
        ),
        Case("mime digest", "en", email.message_from_bytes(raw), None),
        _reply(
            "sympa digest",
            en,
            "users Digest - Vol 4 #2",
            plain,
            headers=list_headers,
            sender="sympa@lists.example",
        ),
    ]


def _history(en: Language, de: Language) -> list[Case]:
    """Replies whose quoted history holds somebody's earlier forward."""
    gmail_forward = [
        "---------- Forwarded message ---------",
        f"From: {NAME} <{ORIGINAL}>",
        "Date: Wed, 27 Oct 2021",
        f"Subject: {TOPIC}",
        "",
        BODY,
    ]
    return [
        _reply(
            "outlook, quoting a forward",
            en,
            f"RE: FW: {TOPIC}",
            "\n".join(
                ["Fixed now.", "", *_block(en.outlook, en.date), "", "FYI", "", *gmail_forward]
            ),
        ),
        _reply(
            "outlook, quoting a forward",
            de,
            f"AW: WG: {TOPIC}",
            "\n".join(["Erledigt.", "", *_block(de.outlook, de.date), "", *gmail_forward]),
        ),
        _reply(
            "gmail, quoting a forward",
            en,
            f"Re: Fwd: {TOPIC}",
            "\n".join(
                [
                    "Fixed now.",
                    "",
                    en.gmail_reply.format(who=_who(en)),
                    "",
                    *(f"> {x}" for x in gmail_forward),
                ]
            ),
        ),
        _reply(
            "apple, quoting a forward",
            de,
            f"Re: WG: {TOPIC}",
            "\n".join(
                [
                    "Erledigt.",
                    "",
                    f"Am 27.10.2021 um 09:31 schrieb {NAME} <{ORIGINAL}>:",
                    "",
                    "> Anfang der weitergeleiteten Nachricht:",
                    *(f"> {x}" for x in gmail_forward[1:]),
                ]
            ),
        ),
    ]
