// qpsam detection: vit_t, 2 prompts
// Replays a qpsam run with qupath-extension-sam 0.9: open the image in QuPath, start the SAM server,
// then run this script from Automate > Script editor.
var foregroundObjects = [
    PathObjects.createAnnotationObject(
        ROIs.createRectangleROI(
            433.0, 194.0, 21.0, 37.0,
            ImagePlane.getPlane(0, 0)
        ),
        null
    ),
    PathObjects.createAnnotationObject(
        ROIs.createRectangleROI(
            416.0, 174.0, 23.0, 32.0,
            ImagePlane.getPlane(0, 0)
        ),
        null
    )
]
var backgroundObjects = []
var task = org.elephant.sam.tasks.SAMDetectionTask.builder(getCurrentViewer())
    .server(org.elephant.sam.Utils.createRenderedServer(getCurrentViewer()))
    .regionRequest(RegionRequest.createInstance(getCurrentServer().getPath(), 0.934228, 0, 0, 696, 520, 0, 0))
    .serverURL('http://localhost:8000/sam/')
    .verifySSL(false)
    .model(org.elephant.sam.entities.SAMType.VIT_T)
    .outputType(org.elephant.sam.entities.SAMOutput.MULTI_SMALLEST)
    .setName(true)
    .setRandomColor(true)
    .checkpointUrl('https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt')
    .addForegroundPrompts(foregroundObjects)
    .addBackgroundPrompts(backgroundObjects)
    .build()
task.run()
var detected = task.get()
if (detected) {
    var hierarchy = getCurrentHierarchy()
    hierarchy.addObjects(detected)
    hierarchy.getSelectionModel().clearSelection()
    fireHierarchyUpdate()
    println "qpsam: added ${detected.size()} objects"
} else {
    println 'qpsam: no objects detected'
}
