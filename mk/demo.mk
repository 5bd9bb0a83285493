# `make demo`: SegFormer-B0 trained from scratch on CamVid for a bounded time
# (DEMO_MINUTES, default 10), then evaluated on val, with predictions and an
# HTML report in runs/demo. Everything is done by scripts/demo.sh (deps,
# build, data lookup via $SEGC_DATA/camvid or ../shared/data/camvid).
DEMO_MINUTES ?= 10

demo:
	@BUILD=$(BUILD) DEMO_MINUTES=$(DEMO_MINUTES) bash scripts/demo.sh
