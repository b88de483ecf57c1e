"""The Foxglove layout shipped as docs/foxglove-layout.json (`radvis view --layout` prints it), built with the
SDK's layout types so it always names the topics capture/foxglove.py writes:

    camera (+ truth columns, pair label) | range-azimuth heatmap (+ truth circles) | plots: learner loss,
    3D: radar points + truth boxes       |                                        | probe accuracy, sync skew

In Foxglove: Layouts -> Import from file. The loss and probe-accuracy plots read /stats/learner, which only
`radvis view` serves (recordings hold the data streams, not the stages' stats)."""
from __future__ import annotations

from capture.foxglove import CAMERA, CAMERA_PAIR, CAMERA_TRUTH, HEATMAP, HEATMAP_TRUTH, PAIRS, POINTS, RADAR_FRAME, SCENE

LEARNER = "/stats/learner"


def layout():
    import foxglove.layouts as fl

    def image(title, topic, annotations):
        return fl.ImagePanel(title=title, config=fl.ImageConfig(image_mode=fl.ImageModeConfig(
            image_topic=topic, annotations={t: fl.ImageAnnotationSettings(visible=True) for t in annotations})))

    def plot(title, series, y_min=None, y_max=None):
        return fl.PlotPanel(title=title, config=fl.PlotConfig(
            paths=[fl.PlotSeries(value=v, label=lab, enabled=True, timestamp_method="receiveTime") for v, lab in series],
            min_y_value=y_min, max_y_value=y_max, show_legend=True))

    three_d = fl.ThreeDeePanel(title="radar points and ground truth", config=fl.ThreeDeeConfig(
        follow_tf=RADAR_FRAME, camera_state=fl.ThreeDeeCameraState(distance=30, phi=50, target=(0.0, 12.0, 0.0)),
        topics={POINTS: fl.BaseRendererPointCloudTopicSettings(visible=True, point_size=6, color_mode="colormap",
                                                                color_field="doppler", color_map="turbo"),
                SCENE: fl.BaseRendererSceneUpdateTopicSettings(visible=True)}))
    left = fl.SplitContainer(direction="column", items=[
        fl.SplitItem(proportion=1, content=fl.SplitContainer(direction="row", items=[
            fl.SplitItem(content=image("camera", CAMERA, [CAMERA_TRUTH, CAMERA_PAIR])),
            fl.SplitItem(content=image("range-azimuth heatmap (far range at top)", HEATMAP, [HEATMAP_TRUTH]))])),
        fl.SplitItem(proportion=1, content=three_d)])
    right = fl.SplitContainer(direction="column", items=[
        fl.SplitItem(content=plot("learner loss (InfoNCE)", [(f"{LEARNER}.loss", "loss")])),
        fl.SplitItem(content=plot("held-out probe accuracy", [(f"{LEARNER}.linear_acc", "linear probe"),
                                                              (f"{LEARNER}.knn_acc", "kNN")], 0, 1)),
        fl.SplitItem(content=plot("sync skew per pair (ms)", [(f"{PAIRS}.skew_ms", "skew")]))])
    return fl.Layout(content=fl.SplitContainer(direction="row", items=[fl.SplitItem(proportion=2, content=left),
                                                                        fl.SplitItem(proportion=1, content=right)]))


def layout_json() -> str:
    """The layout as pretty JSON (what docs/foxglove-layout.json holds)."""
    import json
    return json.dumps(json.loads(layout().to_json()), indent=1) + "\n"
