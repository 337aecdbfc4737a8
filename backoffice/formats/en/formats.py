"""Date output formats for the back office: ISO-like, unambiguous for a finance team working
across countries (2026-11-22 14:05 rather than "Nov. 22, 2026, 2:05 p.m."). Input formats
stay Django's defaults."""

DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
TIME_FORMAT = "H:i"
