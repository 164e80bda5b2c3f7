from tests.test_widget_training import *  # noqa
def test_dbg(widget, qtbot):
    from napari.utils.notifications import notification_manager
    seen = []
    notification_manager.notification_ready.connect(lambda n: seen.append(n))
    rec = Recorder(widget)
    widget.group_size_spin.setValue(500)
    widget.start()
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=30_000)
    qtbot.wait(200)
    print("SEEN", seen, [str(r.message)[:80] for r in notification_manager.records])
    widget.slide_list.item(0).setCheckState(tw.Qt.CheckState.Unchecked)
    widget.start()
    print("SEEN2", [type(n).__name__ for n in seen], [str(r.message)[:80] for r in notification_manager.records])
