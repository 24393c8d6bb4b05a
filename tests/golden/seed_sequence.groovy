// qpsam tracking: sam2_s over t = 20..40
// Replays a qpsam run with qupath-extension-sam 0.9: open the image in QuPath, start the SAM server,
// then run this script from Automate > Script editor.
var fromIndex = 20
var toIndex = 40
var objs = [
    11: [
        org.elephant.sam.parameters.SAM2VideoPromptObject.builder(0).bbox(352, 142, 463, 287).build()
    ]
]
var indexToPathClass = [
    0: PathClass.fromString('SAM0')
]
var regionRequests = (fromIndex..toIndex).collect { RegionRequest.createInstance(getCurrentServer().getPath(), 0.687248, 0, 0, 512, 443, 0, it) }
var task = org.elephant.sam.tasks.SAMSequenceTask.builder(getCurrentViewer())
    .server(org.elephant.sam.Utils.createRenderedServer(getCurrentViewer()))
    .regionRequests(regionRequests)
    .serverURL('http://localhost:8000/sam/')
    .endpointName('video')
    .verifySSL(false)
    .model(org.elephant.sam.entities.SAMType.SAM2_S)
    .promptMode(org.elephant.sam.entities.SAMPromptMode.XYT)
    .objs(objs)
    .setName(true)
    .setRandomColor(true)
    .checkpointUrl('https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_small.pt')
    .indexOffset(fromIndex)
    .indexToPathClass(indexToPathClass)
    .planePosition(0)
    .build()
task.run()
var detected = task.get()
if (detected) {
    var hierarchy = getCurrentHierarchy()
    // Offer the tracked objects' classes in QuPath's class list (on the JavaFX thread, which owns it).
    var qupath = getQuPath()
    if (qupath != null) {
        javafx.application.Platform.runLater {
            var available = qupath.getAvailablePathClasses()
            indexToPathClass.values().findAll { !available.contains(it) }.each { available.add(it) }
        }
    }
    hierarchy.addObjects(detected)
    hierarchy.getSelectionModel().clearSelection()
    fireHierarchyUpdate()
    println "qpsam: added ${detected.size()} objects"
} else {
    println 'qpsam: no objects detected'
}
