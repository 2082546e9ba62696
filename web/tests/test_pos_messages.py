"""The cashier's words for each payment state, and the quick-cash amounts offered on the pay screen."""

from types import SimpleNamespace

from caja_web.pos.messages import cash_bills, outcome, terminal_fault


def progress(state, message="", **kw):
    base = {"paid": False, "manual": None, "in_doubt": False, "doubt_message": "", "state_label": state}
    return SimpleNamespace(state=state, message=message, **(base | kw))


def test_technical_detail_never_reaches_the_message():
    o = outcome(progress("failed_not_sent", "el terminal no confirmó la recepción del comando 100 en 3 s"))
    assert o.headline == "NO SE COBRÓ" and "comando" not in o.text and "100" not in o.text
    assert "comando 100" in o.detail
    o = outcome(progress("failed_not_sent", "transport_error: [Errno 111] Connection refused"))
    assert "Errno" not in o.text and "No se cobró nada" in o.text


def test_a_decline_keeps_the_bank_reason_a_cashier_can_say():
    o = outcome(progress("declined", "Fondos insuficientes"))
    assert o.text == "La tarjeta fue rechazada: Fondos insuficientes. No se cobró nada." and not o.detail


def test_one_message_per_state():
    assert outcome(progress("awaiting", "Inserte o acerque tarjeta")).text == "Inserte o acerque tarjeta"
    assert outcome(progress("in_doubt", in_doubt=True)).headline == "EN DUDA"
    manual = outcome(progress("manual_pending", in_doubt=True, manual=object()))
    assert manual.headline == "COBRE EN EL CELULAR DE RESPALDO" and "No cobre de nuevo" not in manual.text
    assert outcome(progress("approved", paid=True)).headline == "APROBADO"


def test_quick_cash_amounts_are_above_the_total_and_round():
    assert cash_bills(3500) == [4000, 5000, 10000]
    assert cash_bills(7000) == [10000, 20000, 40000]
    assert cash_bills(19000) == [20000, 40000, 60000]
    assert all(b > 45990 for b in cash_bills(45990))


def test_a_terminal_fault_on_the_health_page_is_plain_words():
    f = terminal_fault("transport_error: el terminal no confirmó la recepción del comando 101 en 3 s")
    assert f.text == "Error de comunicación con el terminal" and "comando 101" in f.detail
    assert (
        terminal_fault("timeout: Terminal desconectado").text
        == "El terminal no respondió a tiempo: Terminal desconectado"
    )
    assert (
        terminal_fault("Terminal ocupado").text == "Terminal ocupado" and not terminal_fault("Terminal ocupado").detail
    )
    assert terminal_fault("").text == ""
