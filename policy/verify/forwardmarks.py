"""The vocabulary of forwarding: the markers, labels and prefixes mail clients write.

Kept apart from the reading in :mod:`policy.verify.forwarding`, so adding a
language or a client is a change of data, reviewed as such. Every word list is
normalised once (:func:`norm`: composed, case-folded, Turkish dotted I and
Romanian cedillas folded), so the reading compares like with like. The patterns are bounded:
hostile lines cost linear time.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# Lines longer than this are prose, never a marker, label or attribution.
MAX_MARKER_LINE = 400
# How far below a From-like line a quoted header block's other labels may be.
BLOCK_WINDOW = 8


def norm(text: str) -> str:
    """Case-free, composed text; Turkish İ and Romanian cedillas folded."""
    folded = unicodedata.normalize("NFC", text).casefold().replace("\u0307", "")
    return folded.replace("ţ", "ț").replace("ş", "ș")


def normed(words: Iterable[str]) -> frozenset[str]:
    return frozenset(norm(word) for word in words)


PREFIX = re.compile(r"\s*(?:\[[^\]]{0,40}\]\s*)*([^\s:：\[\]]{1,12}?)\s*(?:\[\d+\])?\s*[:：]")

# Outermost subject prefixes that mean "forwarded", normalised (see norm).
FORWARD_PREFIXES = normed(
    ("fw", "fwd", "wg", "tr", "rv", "enc", "doorst", "ti", "vs", "vb", "vl", "i", "pd", "tov",
     "továbbítás", "ilt", "redir.", "videresend", "пересл", "пр", "πρθ", "转发", "轉寄", "轉送",
     "전달")
)  # fmt: skip
# ... and those that mean "a reply" (the forward markers below them are history).
REPLY_PREFIXES = normed(
    ("re", "aw", "antw", "sv", "odp", "odg", "r", "rif", "res", "resp", "ynt", "yanıt", "απ",
     "σχετ", "válasz", "răsp", "răsp.", "ответ", "отв", "відп", "回复", "答复", "回覆", "회신",
     "답장")
)  # fmt: skip
# Reply prefixes that other languages use for forwarding: (prefix, language).
REPLY_IN_LANGUAGE = {"vs": "fi"}

# Inner text of a dashed line (``---- X ----``) that names a forwarded message.
DASHED_FORWARD = normed(
    (
        "forwarded message",
        "forwarded by",
        "weitergeleitete nachricht",
        "message transféré",
        "message transfere",
        "message transmis",
        "mensaje reenviado",
        "mensagem encaminhada",
        "mensagem reencaminhada",
        "messaggio inoltrato",
        "doorgestuurd bericht",
        "videresendt meddelelse",
        "videresendt melding",
        "vidarebefordrat meddelande",
        "edelleenlähetetty viesti",
        "välitetty viesti",
        "przekazana wiadomość",
        "treść przekazanej wiadomości",
        "wiadomość przesłana dalej",
        "přeposlaná zpráva",
        "preposlaná správa",
        "továbbított üzenet",
        "mesaj redirecționat",
        "mesaj transmis",
        "proslijeđena poruka",
        "прослеђена порука",
        "пересылаемое сообщение",
        "пересланное сообщение",
        "перенаправленное сообщение",
        "перенаправлене повідомлення",
        "переслане повідомлення",
        "iletilmiş mesaj",
        "iletilen ileti",
        "προωθημένο μήνυμα",
        "メッセージを転送",
        "転送メッセージ",
        "転送されたメッセージ",
        "转发的消息",
        "转发邮件",
        "已转发邮件",
        "轉寄的郵件",
        "轉寄郵件",
        "轉寄的訊息",
        "전달된 메시지",
        "전달 메시지",
    )
)
# Inner text of a dashed line that marks the original of a reply *or* a forward.
DASHED_ORIGINAL = normed(
    (
        "original message",
        "ursprüngliche nachricht",
        "originalnachricht",
        "message d'origine",
        "message original",
        "mensaje original",
        "mensagem original",
        "messaggio originale",
        "oorspronkelijk bericht",
        "oprindelig meddelelse",
        "opprinnelig melding",
        "ursprungligt meddelande",
        "alkuperäinen viesti",
        "wiadomość oryginalna",
        "původní zpráva",
        "pôvodná správa",
        "eredeti üzenet",
        "mesaj original",
        "izvorna poruka",
        "исходное сообщение",
        "оригінальне повідомлення",
        "özgün ileti",
        "orijinal ileti",
        "αρχικό μήνυμα",
        "元のメッセージ",
        "原始邮件",
        "原始消息",
        "原始郵件",
        "원본 메시지",
    )
)
# Whole lines (before their colon) that head a forwarded message.
HEADINGS = normed(
    (
        "begin forwarded message",
        "forwarded message",
        "začátek přeposílané zprávy",
        "start på videresendt besked",
        "anfang der weitergeleiteten nachricht",
        "anfang der weitergeleiteten e-mail",
        "inicio del mensaje reenviado",
        "välitetty viesti alkaa",
        "début du message réexpédié",
        "début du message transféré",
        "započni proslijeđenu poruku",
        "početak proslijeđene poruke",
        "továbbított levél kezdete",
        "inizio messaggio inoltrato",
        "begin doorgestuurd bericht",
        "videresendt melding",
        "videresendt e-post",
        "początek przekazywanej wiadomości",
        "início da mensagem reencaminhada",
        "início da mensagem encaminhada",
        "începe mesajul redirecționat",
        "начало переадресованного сообщения",
        "начало пересылаемого сообщения",
        "začiatok preposlanej správy",
        "vidarebefordrat mejl",
        "ileti başlangıcı",
        "початок листа, що пересилається",
        "αρχή προωθημένου μηνύματος",
        "転送されたメッセージ",
        "以下是转发的邮件",
        "转发的邮件",
        "以下為轉寄的郵件",
        "轉寄的郵件",
        "전달된 메시지",
        "전달된 메일",
        # Other macOS and iOS releases word some of them differently.
        "inizio del messaggio inoltrato",
        "początek przekazanej wiadomości",
        "iletilen iletinin başlangıcı",
        "початок пересланого повідомлення",
        "vidarebefordrat meddelande börjar",
        "begynnelse på videresendt melding",
        "videresendt meddelelse starter",
        "välitetyn viestin alku",
        "továbbított üzenet kezdete",
        "începutul mesajului redirecționat",
        "начало на препратено съобщение",
        "začetek posredovanega sporočila",
        "почетак прослеђене поруке",
        "edastatud sõnumi algus",
    )
)

# Labels of a quoted header block, normalised; languages from Outlook, Apple
# Mail, Gmail, Thunderbird, Yahoo and HubSpot.
FROM_LABELS = normed(
    (
        "from", "von", "de", "de la", "od", "fra", "från", "lähettäjä", "šalje", "feladó",
        "da", "van", "expeditorul", "отправитель", "от", "від", "від кого", "kimden",
        "gönderen", "mittente", "nadawca", "από", "差出人", "送信者", "送信元", "发件人",
        "寄件者", "寄件人", "보낸 사람", "보낸사람", "sender", "absender",
    )
)  # fmt: skip
DATE_LABELS = normed(
    (
        "sent", "date", "gesendet", "datum", "envoyé", "enviado", "enviada", "enviado el",
        "enviado em", "enviada em", "fecha", "data",
        "inviato", "verzonden", "sendt", "dato", "skickat", "lähetetty", "päivämäärä",
        "päiväys", "wysłano", "wysłane", "odesláno", "odoslané", "elküldve", "dátum", "trimis",
        "dată", "poslano", "отправлено", "дата", "надіслано", "відправлено", "gönderildi",
        "gönderilen", "tarih", "στάλθηκε", "ημερομηνία", "送信日時", "日付", "日時", "发送时间",
        "日期", "时间", "寄件日期", "時間", "보낸 날짜", "날짜",
    )
)  # fmt: skip
SUBJECT_LABELS = normed(
    (
        "subject", "betreff", "objet", "sujet", "asunto", "assunto", "oggetto", "onderwerp",
        "emne", "ämne", "aihe", "temat", "předmět", "predmet", "tárgy", "subiect", "subiectul",
        "naslov", "тема", "konu", "θέμα", "件名", "主题", "主旨", "제목",
    )
)  # fmt: skip
LANGUAGE_OF_FROM = {"lähettäjä": "fi"}

# An address as quoted in a header block or attribution line (``<a@b>``,
# ``[mailto:a@b]``, bare). Bounded, so a hostile line costs linear time.
ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")
# An attribution line: ends with a colon and names an address in brackets.
ATTRIBUTION = re.compile(r"[<\[(](?:mailto:)?(" + ADDRESS.pattern + r")[>\])].{0,120}[:：]$")
DASHED = re.compile(r"^-{2,}\s*([^-]{1,80}?)\s*-{2,}")
UNDERSCORES = re.compile(r"^_{20,}$")

NATIVE_HEADERS = (
    "x-forwarded-to",
    "x-forwarded-for",
    "x-ms-exchange-forwardingloop",
    "resent-from",
    "resent-sender",
    "arc-seal",
)
SRS = re.compile(r"^srs[01][=+-]", re.IGNORECASE)
# [^<>]: a tag attempt stops at the next "<", so unclosed tags cost linear time.
TAG = re.compile(r"<[^<>]*>")
BREAK = re.compile(
    r"<\s*(?:br|/p|/div|/tr|/li|hr|/h[1-6]|/blockquote|/table)\b[^<>]*>", re.IGNORECASE
)
DIGEST_SUBJECT = re.compile(r"\bdigest\b", re.IGNORECASE)
