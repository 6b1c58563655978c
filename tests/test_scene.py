"""scene: the labels a frame's tiles get."""

from skymix.layout import GridSpec
from skymix.scene import Scene
from skymix.sources import Source
from skymix.streams.room import ParticipantReport


def test_a_name_with_nothing_to_draw_is_labelled_by_its_id():
    sources = [
        Source(ParticipantReport("p1", "\u202e\u202c\u200f")),
        Source(ParticipantReport("p2", "Ada \u202eLovelace")),
    ]
    scene = Scene(sources, (640, 360), GridSpec(), 1e9 / 30, on_loss="freeze", labels=True)
    assert scene.names == {"p1": "p1", "p2": "Ada \u202eLovelace"}
