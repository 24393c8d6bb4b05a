// qpsam automask: vit_t
// Replays a qpsam run with qupath-extension-sam 0.9: open the image in QuPath, start the SAM server,
// then run this script from Automate > Script editor.
var clearCurrentObjects = true
var task = org.elephant.sam.tasks.SAMAutoMaskTask.builder(getCurrentViewer())
    .server(org.elephant.sam.Utils.createRenderedServer(getCurrentViewer()))
    .regionRequest(RegionRequest.createInstance(getCurrentServer().getPath(), 0.934228, 0, 0, 696, 520, 0, 0))
    .serverURL('http://localhost:8000/sam/')
    .verifySSL(false)
    .model(org.elephant.sam.entities.SAMType.VIT_T)
    .outputType(org.elephant.sam.entities.SAMOutput.MULTI_SMALLEST)
    .setName(true)
    .clearCurrentObjects(clearCurrentObjects)
    .setRandomColor(true)
    .pointsPerSide(64)
    .pointsPerBatch(8)
    .predIoUThresh(0.88)
    .stabilityScoreThresh(0.95)
    .stabilityScoreOffset(1.0)
    .boxNmsThresh(0.2)
    .cropNLayers(0)
    .cropNmsThresh(0.7)
    .cropOverlapRatio(0.34)
    .cropNPointsDownscaleFactor(1)
    .minMaskRegionArea(0)
    .includeImageEdge(false)
    .checkpointUrl('https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt')
    .build()
task.run()
var detected = task.get()
if (detected) {
    var hierarchy = getCurrentHierarchy()
    if (clearCurrentObjects) {
        hierarchy.clearAll()
    }
    hierarchy.addObjects(detected)
    hierarchy.getSelectionModel().clearSelection()
    fireHierarchyUpdate()
    println "qpsam: added ${detected.size()} objects"
} else {
    println 'qpsam: no objects detected'
}
