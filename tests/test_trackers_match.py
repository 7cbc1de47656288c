"""Trackers' matching (issue 25): lemmas, the one-word gap, order, ё, case, numbers in words,
speakers, phrases as literal text, `missing`, times, a transcript of hours."""

from __future__ import annotations

from salesbot_poller.config.trackers import TrackerConfig
from salesbot_poller.services.quotes import clock
from salesbot_poller.trackers import Hit, Matcher, Utterance, utterances


def tracker(name: str, *phrases: str, speaker: str = "any", expect: bool = False) -> TrackerConfig:
    return TrackerConfig.model_validate({"name": name, "phrases": list(phrases), "speaker": speaker, "expect": expect})


def said(matcher: Matcher, text: str, role: str = "") -> list[str]:
    """The words of each hit in `text`, said by `role`."""
    return [h.phrase for h in matcher.hits([Utterance(role, None, text)])]


def test_a_phrase_matches_any_form_of_its_words() -> None:
    matcher = Matcher([tracker("Скидка", "скидка"), tracker("Конкурент", "у конкурентов дешевле")])
    assert said(matcher, "А скидку дадите?") == ["скидку"]
    assert said(matcher, "Со скидками сейчас туго") == ["скидками"]
    assert said(matcher, "у конкурента дешевле будет") == ["у конкурента дешевле"]
    assert said(matcher, "Скидочку бы") == []  # a diminutive is another lemma: list it as a phrase


def test_an_ambiguous_word_matches_through_any_of_its_readings() -> None:
    matcher = Matcher([tracker("Металл", "сталь")])
    assert said(matcher, "стали у вас какой марки") == ["стали"]  # стали: сталь or стать


def test_one_word_may_come_between_two_not() -> None:
    matcher = Matcher([tracker("Отказ", "расторгнуть договор")])
    assert said(matcher, "хотим расторгнуть договор") == ["расторгнуть договор"]
    assert said(matcher, "хотим расторгнуть ваш договор") == ["расторгнуть ваш договор"]
    assert said(matcher, "хотим расторгнуть наверное ваш договор") == []


def test_words_match_in_order_only() -> None:
    matcher = Matcher([tracker("Отказ", "расторгнуть договор")])
    assert said(matcher, "договор хотим расторгнуть") == []


def test_yo_and_case_do_not_matter() -> None:
    matcher = Matcher([tracker("Ёлки", "ёлочные игрушки"), tracker("Дешево", "ДЕШЕВЛЕ")])
    assert said(matcher, "ЕЛОЧНЫЕ игрушки привезли") == ["ЕЛОЧНЫЕ игрушки"]
    assert said(matcher, "ёлочные Игрушки") == ["ёлочные Игрушки"]
    assert said(matcher, "там Дешевле") == ["Дешевле"]


def test_numbers_in_digits_and_in_words_are_the_same() -> None:
    matcher = Matcher([tracker("Скидка", "10 процентов"), tracker("Сумма", "двадцать пять тысяч")])
    assert said(matcher, "дадим десять процентов") == ["десять процентов"]
    assert said(matcher, "дадим 10% сразу") == ["10%"]
    assert said(matcher, "минус десяти процентов") == ["десяти процентов"]
    assert said(matcher, "ну 25 тысяч максимум") == ["25 тысяч"]
    assert said(matcher, "двадцать пять тысяч рублей") == ["двадцать пять тысяч"]
    assert said(matcher, "двадцать тысяч") == []
    assert said(matcher, "сто десять процентов") == []  # 110 is not 10


def test_ordinals_and_compound_numbers_read_as_their_value() -> None:
    matcher = Matcher([tracker("Дата", "25 число"), tracker("Сумма", "1200 рублей")])
    assert said(matcher, "до двадцать пятого числа") == ["двадцать пятого числа"]
    assert said(matcher, "тысяча двести рублей") == ["тысяча двести рублей"]
    assert said(matcher, "тысячу двести рублей") == ["тысячу двести рублей"]


def test_a_trackers_speaker_limits_the_utterances_searched_and_unknown_roles_are_searched_by_all() -> None:
    matcher = Matcher(
        [tracker("Конкурент", "конкурент", speaker="client"), tracker("Запись", "запись", speaker="manager")]
    )
    lines = [
        Utterance("manager", None, "у конкурентов хуже, разговор идёт в запись"),
        Utterance("client", None, "конкуренты предлагают, запись не нужна"),
        Utterance("", None, "конкурент и запись"),
    ]
    assert [(h.tracker, h.speaker) for h in matcher.hits(lines)] == [
        ("Запись", "manager"),
        ("Конкурент", "client"),
        ("Конкурент", ""),
        ("Запись", ""),
    ]


def test_regex_metacharacters_in_a_phrase_are_plain_text() -> None:
    matcher = Matcher([tracker("Тариф", "тариф (про)*", "цена?", "С++ курс")])
    assert said(matcher, "тариф про подойдёт") == ["тариф про"]
    assert said(matcher, "тарифффф") == []
    assert said(matcher, "цена устроит") == ["цена"]
    assert said(matcher, "с курс") == ["с курс"]  # "+" is punctuation, as in the phrase


def test_names_choose_the_trackers_and_missing_lists_unsaid_expected_ones() -> None:
    matcher = Matcher(
        [
            tracker("Запись", "разговор записывается", speaker="manager", expect=True),
            tracker("Имя", "меня зовут", speaker="manager", expect=True),
            tracker("Скидка", "скидка"),
        ]
    )
    hits = matcher.hits([Utterance("manager", 3.0, "Здравствуйте, меня зовут Анна, скидка есть")])
    assert [h.tracker for h in hits] == ["Имя", "Скидка"]
    assert matcher.missing(hits) == ["Запись"]
    assert matcher.missing(hits, names=["Имя", "Скидка"]) == []
    only = matcher.hits([Utterance("manager", 3.0, "меня зовут Анна, скидка есть")], names=["Скидка"])
    assert [h.tracker for h in only] == ["Скидка"]


def test_hits_carry_the_lines_time_and_role_in_transcript_order() -> None:
    matcher = Matcher([tracker("Конкурент", "у конкурентов дешевле"), tracker("Скидка", "скидка")])
    transcript = "[00:05] Менеджер: Добрый день\n[03:12] Клиент: а у конкурентов ну дешевле, скидку дадите?\n"
    assert matcher.hits(utterances(transcript)) == [
        Hit("Конкурент", "client", "у конкурентов ну дешевле", 192.0),
        Hit("Скидка", "client", "скидку", 192.0),
    ]
    assert matcher.hits(utterances("скидка без ролей и времени")) == [Hit("Скидка", "", "скидка", None)]


def test_one_trackers_hits_do_not_overlap_the_longest_phrase_wins() -> None:
    matcher = Matcher([tracker("Скидка", "скидка", "скидка 10 процентов")])
    assert said(matcher, "скидка 10 процентов и ещё скидка") == ["скидка 10 процентов", "скидка"]


def test_a_three_hour_transcript_is_matched_whole() -> None:
    matcher = Matcher([tracker("Конкурент", "у конкурентов дешевле"), tracker("Скидка", "скидка")])
    turn = "ну смотрите мы можем привезти панели на объект в четверг если оплата пройдёт до среды"
    lines = [f"[{clock(i * 2)}] {'Менеджер' if i % 2 else 'Клиент'}: {turn}" for i in range(5400)]
    lines[5000] = f"[{clock(10000)}] Клиент: у конкурентов дешевле, скидку дадите?"
    hits = matcher.hits(utterances("\n".join(lines)))
    assert [(h.tracker, h.at) for h in hits] == [("Конкурент", 10000.0), ("Скидка", 10000.0)]
